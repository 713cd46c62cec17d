"""Typed stub of the compiled cffi module ``nscg._native._nscg``.

Generated from abi.h; a unit test keeps it in sync.
"""

from collections.abc import Callable
from typing import Any, Final, TypeVar

_F = TypeVar("_F", bound=Callable[..., Any])

class _FFI:
    NULL: Any
    def new(self, cdecl: str, init: Any = ...) -> Any: ...
    def cast(self, cdecl: str, value: Any) -> Any: ...
    def string(self, cdata: Any, maxlen: int = ...) -> bytes: ...
    def buffer(self, cdata: Any, size: int = ...) -> Any: ...
    def addressof(self, cdata: Any, *fields: str) -> Any: ...
    def from_buffer(self, python_buffer: Any, require_writable: bool = ...) -> Any: ...
    def release(self, cdata: Any) -> None: ...
    def sizeof(self, cdecl: Any) -> int: ...
    def typeof(self, cdecl: Any) -> Any: ...
    def memmove(self, dest: Any, src: Any, n: int) -> None: ...
    def def_extern(
        self, name: str = ..., error: Any = ..., onerror: Any = ...
    ) -> Callable[[_F], _F]: ...
    errno: int

class _Lib:
    NSCG_ABI_VERSION: Final[int]
    NSCG_STAGE_NONE: Final[int]
    NSCG_STAGE_CLONE: Final[int]
    NSCG_STAGE_SIGNALS: Final[int]
    NSCG_STAGE_PDEATHSIG: Final[int]
    NSCG_STAGE_FDS: Final[int]
    NSCG_STAGE_SETSID: Final[int]
    NSCG_STAGE_WAIT_PARENT: Final[int]
    NSCG_STAGE_SETNS: Final[int]
    NSCG_STAGE_UNSHARE: Final[int]
    NSCG_STAGE_FORK: Final[int]
    NSCG_STAGE_HOSTNAME: Final[int]
    NSCG_STAGE_DOMAINNAME: Final[int]
    NSCG_STAGE_LOOPBACK: Final[int]
    NSCG_STAGE_TIMENS: Final[int]
    NSCG_STAGE_MOUNTS: Final[int]
    NSCG_STAGE_PIVOT_ROOT: Final[int]
    NSCG_STAGE_RLIMITS: Final[int]
    NSCG_STAGE_CHDIR: Final[int]
    NSCG_STAGE_SETGROUPS: Final[int]
    NSCG_STAGE_SETGID: Final[int]
    NSCG_STAGE_SETUID: Final[int]
    NSCG_STAGE_CAPS: Final[int]
    NSCG_STAGE_NO_NEW_PRIVS: Final[int]
    NSCG_STAGE_SECCOMP: Final[int]
    NSCG_STAGE_EXEC: Final[int]
    NSCG_STAGE_ID_MAPS: Final[int]
    NSCG_STAGE_READY: Final[int]
    NSCG_F_INIT: Final[int]
    NSCG_F_SETID: Final[int]
    NSCG_F_SETGROUPS: Final[int]
    NSCG_F_NO_NEW_PRIVS: Final[int]
    NSCG_F_LOOPBACK: Final[int]
    NSCG_F_NEWTIME: Final[int]
    NSCG_F_SETSID: Final[int]
    NSCG_F_WAIT_PARENT: Final[int]
    NSCG_F_UNSHARE_LATE: Final[int]
    NSCG_F_FORK_PIDNS: Final[int]
    NSCG_F_FORCE_CLONE_FALLBACK: Final[int]
    NSCG_F_NO_SPAWNER_THREAD: Final[int]
    NSCG_MOUNT_BIND: Final[int]
    NSCG_MOUNT_FS: Final[int]
    NSCG_MOUNT_MKDIR: Final[int]
    NSCG_MOUNT_SYMLINK: Final[int]
    NSCG_MOUNT_FILE: Final[int]
    NSCG_MOUNT_READONLY: Final[int]
    NSCG_MOUNT_MASK: Final[int]
    NSCG_MOUNT_SCRATCH: Final[int]
    NSCG_MOUNT_SDIR: Final[int]
    NSCG_MOUNT_SFILE: Final[int]
    NSCG_MOUNT_SFS: Final[int]
    NSCG_MOUNT_SBIND: Final[int]
    NSCG_MOUNT_SDONE: Final[int]
    NSCG_MOUNT_SLOT: Final[int]
    NSCG_MOUNT_CHMOD: Final[int]
    NSCG_MAX_SLOTS: Final[int]
    NSCG_MAX_DEST: Final[int]
    NSCG_SCRATCH_CHANNELS: Final[int]
    NSCG_MNT_RDONLY: Final[int]
    NSCG_MNT_NOSUID: Final[int]
    NSCG_MNT_NODEV: Final[int]
    NSCG_MNT_NOEXEC: Final[int]
    NSCG_MNT_RECURSIVE: Final[int]
    NSCG_MNT_CREATE_DIR: Final[int]
    NSCG_MNT_CREATE_FILE: Final[int]
    NSCG_MNT_OPTIONAL: Final[int]
    NSCG_MNT_FROM_FD: Final[int]
    NSCG_MNT_FROM_SLOT: Final[int]
    NSCG_FD_NOT_OPENED: Final[int]
    NSCG_MOUNTS_ACTIVE: Final[int]
    NSCG_MOUNTS_SLAVE: Final[int]
    NSCG_MOUNTS_ROOT_RDONLY: Final[int]
    NSCG_MOUNTS_KEEP_CWD: Final[int]
    NSCG_CLONE_NEWNS: Final[int]
    NSCG_CLONE_NEWCGROUP: Final[int]
    NSCG_CLONE_NEWUTS: Final[int]
    NSCG_CLONE_NEWIPC: Final[int]
    NSCG_CLONE_NEWUSER: Final[int]
    NSCG_CLONE_NEWPID: Final[int]
    NSCG_CLONE_NEWNET: Final[int]
    NSCG_CLONE_NEWTIME: Final[int]
    NSCG_HAS_CLONE3: Final[int]
    NSCG_HAS_CLONE_PIDFD: Final[int]
    NSCG_HAS_CLONE_INTO_CGROUP: Final[int]
    NSCG_F_CAPS: Final[int]
    NSCG_F_CAPS_BOUNDING: Final[int]
    NSCG_F_SECCOMP: Final[int]
    NSCG_F_VFORK: Final[int]
    NSCG_F_PARENT_MAPS: Final[int]
    NSCG_F_WAIT_EXEC: Final[int]
    NSCG_F_MAKE_STATUS: Final[int]
    NSCG_F_ROOT_EARLY: Final[int]
    NSCG_CHECK_CAPS: Final[int]
    NSCG_CHECK_SOCKETS: Final[int]
    NSCG_MAKE_ERR_PIPE: Final[int]
    NSCG_MAKE_SYNC_PIPE: Final[int]
    NSCG_SLOT_ERR_R: Final[int]
    NSCG_SLOT_ERR_W: Final[int]
    NSCG_SLOT_SYNC_R: Final[int]
    NSCG_SLOT_SYNC_W: Final[int]
    def nscg_abi_version(self) -> int: ...
    def nscg_build_hash(self) -> Any: ...
    def nscg_clone_features(self) -> int: ...
    def nscg_spawn(self, plan: Any, out: Any) -> int: ...
    def nscg_check_flags(self, flags: int) -> int: ...
    def nscg_wait(self, pidfd: int, options: int, out: Any) -> int: ...
    def nscg_reap(self, pidfd: int, options: int, out: Any, page: Any) -> int: ...
    def nscg_pidfd_open(self, pid: int) -> int: ...
    def nscg_pidfd_send_signal(self, pidfd: int, sig: int) -> int: ...
    def nscg_release_stack(self, addr: int, size: int) -> None: ...
    def nscg_pipe(self, fds: Any) -> int: ...
    def nscg_open(self, path: bytes, flags: int, slot: Any) -> int: ...
    def nscg_close(self, slot: Any) -> None: ...
    def nscg_spawn_wait(self, plan: Any, out: Any) -> int: ...
    def nscg_spawn_abort(self, plan: Any, out: Any) -> None: ...
    def nscg_cap_effective(self, out: Any) -> int: ...
    def nscg_sys_setns(self, fd: int, nstype: int) -> int: ...
    def nscg_sys_unshare(self, flags: int) -> int: ...
    def nscg_sys_prctl(self, option: int, arg2: int, arg3: int, arg4: int, arg5: int) -> int: ...
    def nscg_sys_seccomp(self, operation: int, flags: int, args: Any) -> int: ...
    def nscg_sys_inotify_init1(self, flags: int) -> int: ...
    def nscg_sys_inotify_add_watch(self, fd: int, path: bytes, mask: int) -> int: ...
    def nscg_map_shared(self, fd: int) -> Any: ...
    def nscg_detached_tree(
        self, path: bytes, recursive: int, attr_set: int, userns_fd: int, step: Any, out: Any
    ) -> int: ...
    def nscg_unmap_shared(self, page: Any) -> None: ...

ffi: _FFI
lib: _Lib
