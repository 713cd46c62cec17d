"""The parent's side of a spawn: validate, resolve, flatten into one C plan, run it.

Everything that needs thinking happens here, in the parent; the child only
executes the flat ``struct nscg_plan`` (see ``_native/child.c``).
"""

from __future__ import annotations

import contextlib
import enum
import errno
import functools
import os
import signal
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

import attrs

from nscg import _idmap
from nscg import process as _process_mod
from nscg._native import ffi, lib
from nscg._textmode import checked_input, text_codec
from nscg.container import (
    DEFAULT_PATH,
    DEVNULL,
    PIPE,
    STDOUT,
    Container,
    StdioSpec,
    _env_conv,
    rlimit_name,
)
from nscg.errors import (
    ExecutableNotFoundError,
    ExecutablePermissionError,
    SpawnError,
    SpecError,
    TimeoutExpired,
    UnsupportedError,
)
from nscg.namespaces import JOIN_ORDER, IdMap, Namespace, in_initial_userns, root_range
from nscg.process import AnyProcess, Process, Result, Stage, _shielded, reap_abandoned
from nscg.seccomp import _policy as _seccomp_policy

#: the child's failure report, struct nscg_child_error (abi.h): read as bytes
#: from the error pipe, decoded with the cffi declaration (_decode_record)
_REC_SIZE: int = ffi.sizeof("struct nscg_child_error")
_self_pidfd: tuple[int, int] = (-1, -1)  # (pid, fd): our own pidfd, for the pdeathsig race
_self_pidfd_lock = threading.Lock()
_init_fd_cache: tuple[int, int] = (-1, -1)


def which(name: str, path: str | None = None) -> str | None:
    """Like shutil.which (without importing shutil): the first executable ``name`` on PATH."""
    for d in (path if path is not None else os.environ.get("PATH", DEFAULT_PATH)).split(":"):
        cand = os.path.join(d or ".", name)
        if os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    return None


def _above_stdio(fd: int) -> int:
    """``fd`` moved above 0-2 if it landed there (the caller had closed its stdio).

    An fd nscg keeps (a pidfd, the init's memfd) must not take the number of
    a closed standard stream: a later spawn inheriting "stdin" would pass it
    into the sandbox.
    """
    if not 0 <= fd < 3:
        return fd
    import fcntl

    try:
        return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    finally:
        os.close(fd)


def _init_fd() -> int:
    """An fd of nscg-init, made once per process, exec'd by fd as the sandbox's pid 1.

    A sealed memfd copy, as runc does with its own binary (CVE-2019-5736):
    exec'd from the installed file, /proc/1/exe would hand a payload that may
    look at pid 1 (one given CAP_SYS_PTRACE) the host file, owned by the uid
    the payload runs as, on a writable mount: chmod was enough to tamper with
    every later sandbox's init. The copy cannot be written, grown or shrunk.
    Where memfds may not be executed (``vm.memfd_noexec=2``), the file itself.
    """
    global _init_fd_cache
    pid = os.getpid()
    with _self_pidfd_lock:
        if _init_fd_cache[0] != pid:
            from nscg._native import INIT_PATH

            _init_fd_cache = (pid, _above_stdio(_sealed_copy(INIT_PATH)))
        return _init_fd_cache[1]


_MFD_EXEC = 0x0010  # Linux 6.3: executable memfd, asked for explicitly


def _sealed_copy(path: str) -> int:
    import fcntl

    with open(path, "rb") as f:
        data = f.read()
    fd = -1
    for extra in (_MFD_EXEC, 0):
        try:
            fd = os.memfd_create("nscg-init", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING | extra)
            break
        except OSError as e:
            if e.errno != errno.EINVAL:  # EACCES: vm.memfd_noexec forbids it
                return os.open(path, os.O_PATH | os.O_CLOEXEC)
    if fd < 0:
        return os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fchmod(fd, 0o555)
        seals = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _own_pidfd() -> int:
    global _self_pidfd
    pid = os.getpid()
    if _self_pidfd[0] == pid:
        return _self_pidfd[1]
    with _self_pidfd_lock:
        if _self_pidfd[0] != pid:
            fd = _above_stdio(lib.nscg_pidfd_open(pid))
            _self_pidfd = (pid, fd if fd >= 0 else -1)
        return _self_pidfd[1]


# ------------------------------------------------------------------ privileges
def _cap_eff() -> int:
    """This thread's effective capabilities (capget; /proc/self/status if that fails)."""
    out = ffi.new("uint64_t *")
    if lib.nscg_cap_effective(out) == 0:
        return int(out[0])
    from nscg import _host

    value = _host.status_field("CapEff")
    return int(value, 16) if value else 0


def _has_cap(bit: int) -> bool:
    return bool(_cap_eff() >> bit & 1)


_CAP_SETGID = 6
_CAP_SETUID = 7
_CAP_SETPCAP = 8


@functools.lru_cache(maxsize=64)
def _caps_masks(caps: Any) -> tuple[int, int, int, int, int, int]:
    """(bounding, permitted, effective, inheritable, ambient, last_cap) for the child."""
    from nscg.capabilities import Capabilities, last_cap

    spec = caps if caps is not None else Capabilities.none()
    spec.check_spawnable()
    m = spec.to_masks()
    return (m.bounding, m.permitted, m.effective, m.inheritable, m.ambient, last_cap())


# ------------------------------------------------------------------ resolution
def _default_env(uid_inside: int) -> dict[str, str]:
    return {
        "PATH": DEFAULT_PATH,
        "HOME": "/root" if uid_inside == 0 else "/",
        "TERM": os.environ.get("TERM", "dumb"),
    }


def resolve_executable(
    name: str, path_var: str, executable: str | None, root: str = "/", cwd: str | None = None
) -> str:
    """Find the program to run, as the kernel will see it, before anything is cloned.

    As ``execvp`` (and so :mod:`subprocess`) does: the first executable file
    on PATH wins; when there is none but a candidate exists (a file without
    execute permission, a directory), the error is EACCES, else ENOENT.

    Raises:
        ExecutableNotFoundError: no candidate exists (ENOENT).
        ExecutablePermissionError: one exists, but none is an executable file (EACCES).
    """
    cand: list[str]
    target = executable or name
    if "/" in target:
        if not target.startswith("/"):
            target = os.path.join(cwd or os.getcwd(), target)
        cand = [target]
    else:
        cand = [os.path.join(d or ".", target) for d in path_var.split(":")]
    denied: str | None = None
    for c in cand:
        host = c if root == "/" else os.path.join(root, c.lstrip("/"))
        if os.path.isfile(host) and os.access(host, os.X_OK):
            return c
        if denied is None and os.path.exists(host):
            denied = c
    if denied is not None:
        raise _not_executable(denied, "")
    where = f"on PATH {path_var!r}" if "/" not in (executable or name) else ""
    raise ExecutableNotFoundError(
        errno.ENOENT, f"executable {target!r} not found {where}".rstrip(), target
    )


def _not_executable(path: str, where: str) -> ExecutablePermissionError:
    """EACCES for a program that exists (in the sandbox) but cannot be executed."""
    return ExecutablePermissionError(
        errno.EACCES,
        f"{path!r}{where} is not an executable file (a directory, or no execute permission)",
        path,
    )


class _Fds:
    """The fds one spawn opens, kept in C memory, never only on Python's stack.

    Made by C helpers that write into ``slot`` (``nscg_pipe``, ``nscg_open``):
    a signal handler raising right after such a call finds the fd there, and
    the spawn's abort closes it. Slots: the error pipe, the go-ahead pipe,
    then two per stdio stream (a pipe's ends, or /dev/null). The child's ends
    are closed right after the clone; the caller's move to their owner.
    """

    ERR_R, ERR_W = lib.NSCG_SLOT_ERR_R, lib.NSCG_SLOT_ERR_W  # (made by nscg_spawn: plan.make)
    SYNC_R, SYNC_W = lib.NSCG_SLOT_SYNC_R, lib.NSCG_SLOT_SYNC_W
    CGROUP = 10
    N = 11

    def __init__(self) -> None:
        self.slot = ffi.new("int32_t[]", [-1] * self.N)
        self.child_side: list[int] = []  # slot numbers
        #: the parent's idmapped trees (nscg._idmap.open_trees), child side too
        self.trees: Any = ffi.NULL
        self.n_trees = 0

    def pipe(self, i: int, child: int) -> None:
        """A close-on-exec pipe in slots ``i`` (read end) and ``i + 1`` (write end)."""
        r = lib.nscg_pipe(self.slot + i)
        if r < 0:
            raise OSError(-r, os.strerror(-r))
        self.child_side.append(child)

    def open_devnull(self, i: int) -> None:
        r = lib.nscg_open(b"/dev/null", os.O_RDWR | os.O_CLOEXEC, self.slot + i)
        if r < 0:
            raise OSError(-r, os.strerror(-r), os.devnull)
        self.child_side.append(i)

    def close(self, i: int) -> None:
        if self.slot[i] >= 0:  # (an empty slot needs no call, nor a release of the GIL)
            lib.nscg_close(self.slot + i)  # (closed and forgotten in one call)

    def close_child_side(self) -> None:
        for i in self.child_side:
            self.close(i)
        self._close_trees()

    def close_all(self) -> None:
        for i in range(self.N):
            self.close(i)
        self._close_trees()

    def _close_trees(self) -> None:
        for k in range(self.n_trees):
            if self.trees[k] >= 0:
                lib.nscg_close(self.trees + k)


def _stdio(
    spec: StdioSpec, target: int, fds: _Fds, stdout_fd: int | None
) -> tuple[int | None, int | None]:
    """Return (fd the child gets at ``target``, slot of the parent's pipe end)."""
    if spec is None:
        # only if open in the parent, checked now: a pipe made for a later
        # stream may take this number once it is free
        try:
            os.fstat(target)
        except OSError:
            return None, None
        return target, None
    base = 4 + 2 * target
    if spec == PIPE:
        child, parent = (base, base + 1) if target == 0 else (base + 1, base)
        fds.pipe(base, child)
        return int(fds.slot[child]), parent  # (the caller makes a file object of it)
    if spec == DEVNULL:
        fds.open_devnull(base)
        return int(fds.slot[base]), None
    if spec == STDOUT:
        if target != 2:
            raise SpecError("STDOUT is only valid for stderr")
        return stdout_fd, None
    if isinstance(spec, int):
        if spec < 0:
            raise SpecError(f"invalid fd {spec} for {('stdin', 'stdout', 'stderr')[target]}")
        return spec, None
    if hasattr(spec, "fileno"):
        return spec.fileno(), None
    raise SpecError(f"invalid stdio spec {spec!r}")


# ---------------------------------------------------------------- id maps
def _map_text(maps: Sequence[IdMap]) -> str:
    return "".join(m.line() for m in maps)


def _single_self_map(maps: Sequence[IdMap], own: int) -> bool:
    return len(maps) == 1 and maps[0].count == 1 and maps[0].outside == own


def _plan_maps(
    c: Container, cap_eff: int
) -> tuple[tuple[IdMap, ...], tuple[IdMap, ...], str, str, bool]:
    """Return (uid_map, gid_map, uid tool, gid tool, deny_setgroups).

    A tool is "write" (the parent writes /proc/PID/*_map) or the path of
    newuidmap/newgidmap.
    """
    euid, egid = os.geteuid(), os.getegid()
    uid_in = c.user if c.user is not None else 0
    gid_in = c.group if c.group is not None else 0
    uid_map = c.uid_map or (IdMap(uid_in, euid, 1),)
    gid_map = c.gid_map or (IdMap(gid_in, egid, 1),)
    if (c.uid_map is None or c.gid_map is None) and euid == 0 and in_initial_userns():
        # root is not host root: ids 0..65535 go to an unprivileged host range
        uid_map, gid_map = _root_caller_maps(c, uid_map, gid_map)
    tools = []
    deny = False
    for maps, own, cap, helper in (
        (uid_map, euid, _CAP_SETUID, "newuidmap"),
        (gid_map, egid, _CAP_SETGID, "newgidmap"),
    ):
        has_cap = bool(cap_eff >> cap & 1)
        if has_cap or _single_self_map(maps, own):
            tools.append("write")
            if helper == "newgidmap" and not has_cap:
                deny = True
            continue
        found = which(helper)
        if not found:
            raise UnsupportedError(
                f"mapping {_map_text(maps).strip()!r} needs {helper}(1) (package uidmap) and "
                f"an entry in /etc/sub{'u' if helper == 'newuidmap' else 'g'}id, or root; "
                f"without them an unprivileged caller can map only its own id",
                feature=helper,
            )
        tools.append(found)
    return uid_map, gid_map, tools[0], tools[1], deny


def _root_caller_maps(
    c: Container, uid_map: tuple[IdMap, ...], gid_map: tuple[IdMap, ...]
) -> tuple[tuple[IdMap, ...], tuple[IdMap, ...]]:
    """A root caller's default maps: inside 0..65535 to :func:`root_range` (per map not given)."""
    rr = root_range()
    if c.uid_map is None:
        uid_map = rr.uid_map()
    if c.gid_map is None:
        gid_map = rr.gid_map()
    for what, ident, maps in (
        ("user", c.user, uid_map),
        ("group", c.group, gid_map),
    ):
        if ident is not None and not any(m.contains_inside(ident) for m in maps):
            raise SpecError(
                f"{what} {ident} is outside the default map of a root caller's sandbox "
                f"(ids 0..{rr.count - 1}); give a {what[0]}id map that maps it"
            )
    for g in c.groups or ():
        if not any(m.contains_inside(g) for m in gid_map):
            raise SpecError(f"supplementary group {g} is not mapped by the gid map {gid_map}")
    return uid_map, gid_map


def _root_elsewhere(uid_map: Sequence[IdMap], gid_map: Sequence[IdMap]) -> bool:
    """Whether the maps give inside uid and gid 0 to other host ids than the caller's."""
    u = next((m.outside for m in uid_map if m.contains_inside(0)), None)
    g = next((m.outside for m in gid_map if m.contains_inside(0)), None)
    return u is not None and g is not None and (u != os.geteuid() or g != os.getegid())


def _write_maps(
    pid: int, uid_map: Sequence[IdMap], gid_map: Sequence[IdMap], utool: str, gtool: str, deny: bool
) -> None:
    def write(path: str, text: str) -> None:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, text.encode())
            finally:
                os.close(fd)
        except OSError as e:
            raise SpawnError(e.errno or 0, "write", Stage.ID_MAPS, -1, path) from None

    def helper(tool: str, maps: Sequence[IdMap], path: str) -> None:
        import subprocess

        args = [tool, str(pid)]
        for m in maps:
            args += [str(m.inside), str(m.outside), str(m.count)]
        r = subprocess.run(args, capture_output=True, check=False)
        if r.returncode:
            raise SpawnError(
                errno.EPERM,
                os.path.basename(tool),
                Stage.ID_MAPS,
                -1,
                path,
                detail=r.stderr.decode(errors="replace").strip(),
            )

    if utool == "write":
        write(f"/proc/{pid}/uid_map", _map_text(uid_map))
    else:
        helper(utool, uid_map, f"/proc/{pid}/uid_map")
    if deny:
        write(f"/proc/{pid}/setgroups", "deny")
    if gtool == "write":
        write(f"/proc/{pid}/gid_map", _map_text(gid_map))
    else:
        helper(gtool, gid_map, f"/proc/{pid}/gid_map")


# ----------------------------------------------------------------- diagnosis
def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def userns_restriction() -> str | None:
    """Why this caller may not create user namespaces, or None if nothing says so."""
    if _read("/proc/sys/kernel/unprivileged_userns_clone") == "0" and os.geteuid() != 0:
        return "unprivileged user namespaces are disabled by kernel.unprivileged_userns_clone=0"
    if _read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == "1" and os.geteuid() != 0:
        return (
            "unprivileged user namespaces are restricted by "
            "kernel.apparmor_restrict_unprivileged_userns=1 (needs an AppArmor profile "
            "with 'userns,' or the sysctl set to 0)"
        )
    if _read("/proc/sys/user/max_user_namespaces") == "0":
        return "user namespaces are disabled by user.max_user_namespaces=0"
    return None


def _clone_error(err: int, syscall: str, ns: Namespace) -> Exception:
    detail = ""
    if err in (errno.EPERM, errno.ENOSPC, errno.EACCES) and ns & Namespace.USER:
        why = userns_restriction()
        if why:
            return UnsupportedError(
                f"{syscall} failed: {os.strerror(err)} — {why}", feature="userns"
            )
    if err == errno.EPERM and ns and not ns & Namespace.USER and not _has_cap(21):
        detail = (
            "creating namespaces without a user namespace needs CAP_SYS_ADMIN; add Namespace.USER"
        )
    return SpawnError(err, syscall, Stage.CLONE, -1, detail=detail)


# ------------------------------------------------------------------ the modes
class Mode(enum.Enum):
    """How a spawn runs after its clone: one straight path each (docs/design.md)."""

    #: no pid namespace, nothing for the parent to do: the payload is the first
    #: child, cloned vfork-style; the clone returns once it has exec'd or failed
    VFORK = "vfork"
    #: everything after the clone in the one C call: the id maps (written by
    #: C), the go-ahead, the wait for the payload's exec
    IN_C = "in C"
    #: Python acts between the clone and the exec: while the first child
    #: waits for the go-ahead it writes the maps through newuidmap, places the
    #: child in its cgroup (no clone3), attaches network links, or reads the
    #: child's "ready" of a late unshare; then ``nscg_spawn_wait``
    PYTHON_STEPS = "Python steps"


class Caller(NamedTuple):
    """What a spawn's mode depends on besides the Container."""

    #: both id maps can be written to /proc/PID/*_map by this process (no newuidmap)
    maps_by_write: bool


class ModeChoice(NamedTuple):
    """A spawn's mode and the parts of it that vary within a mode."""

    mode: Mode
    #: the first child starts pid 1 of a new (or joined) pid namespace
    pid_ns: bool
    #: who writes the id maps: "none" (no new user namespace), "c", "python"
    maps: str
    #: namespaces joined and then created (the child unshares after its setns)
    late: bool
    #: Python has steps while the first child waits (a cgroup, network links)
    steps: bool


def choose_mode(c: Container, caller: Caller) -> ModeChoice:
    """The mode of a spawn of ``c`` by ``caller``: a pure function (tests/unit/test_modes.py)."""
    ns = c.namespaces
    late = bool(c.join) and bool(ns & ~Namespace.TIME)
    pid_ns = bool(ns & Namespace.PID) or any(r.kind == Namespace.PID for r in c.join)
    steps = c.cgroup is not None or bool(
        _parent_hooks(c)
    )  # (a cgroup: the fallback without clone3)
    if not ns & Namespace.USER:
        maps = "none"
    elif caller.maps_by_write and not (steps or late):
        maps = "c"
    else:
        maps = "python"
    if not (pid_ns or steps or maps != "none"):
        mode = Mode.VFORK
    elif steps or late or maps == "python":
        mode = Mode.PYTHON_STEPS
    else:
        mode = Mode.IN_C
    return ModeChoice(mode, pid_ns, maps, late, steps)


def mode_flags(m: ModeChoice) -> int:
    """The NSCG_F_* flags of a mode (what spawn.c's path for it reads)."""
    flags = lib.NSCG_F_UNSHARE_LATE if m.late else 0
    if m.pid_ns:
        flags |= lib.NSCG_F_FORK_PIDNS | lib.NSCG_F_MAKE_STATUS
    if m.mode is Mode.VFORK:
        return flags | lib.NSCG_F_VFORK
    if m.maps != "none" or m.steps:
        flags |= lib.NSCG_F_WAIT_PARENT  # (the first child waits for the go-ahead)
    if m.mode is Mode.IN_C:
        flags |= lib.NSCG_F_WAIT_EXEC
        if m.maps == "c":
            flags |= lib.NSCG_F_PARENT_MAPS
    return flags


# ---------------------------------------------------------------- the spawn
class _Plan:
    """A struct nscg_plan and every buffer it points to (kept alive for the call)."""

    def __init__(self) -> None:
        self.keep: list[Any] = []
        self.plan = ffi.new("struct nscg_plan *")
        self.plan.abi = lib.NSCG_ABI_VERSION
        self.plan.cgroup_fd = -1
        self.plan.parent_pidfd = -1
        self.plan.init_fd = -1
        self._new_state()
        self.plan.scratch_sock = -1
        self.plan.fault.stage = -1
        self.plan.fault.index = -1

    def _new_state(self) -> None:
        """What this spawn's C writes while it runs (the plan itself is read only)."""
        self.state = ffi.new("struct nscg_spawn_state *")
        st = self.state
        st.status_fd = st.err_fd = st.sync_fd = st.err_r = st.sync_w = -1
        self.plan.state = self.state

    def cstr(self, s: str | bytes | None) -> Any:
        if s is None:
            return ffi.NULL
        try:
            b = os.fsencode(s)
        except UnicodeEncodeError:
            raise SpecError(f"{s!r} cannot be encoded for the kernel") from None
        if b"\0" in b:
            raise SpecError(f"NUL byte in {s!r}")
        buf = ffi.new("char[]", b)
        self.keep.append(buf)
        return buf

    def cstr_array(self, items: Sequence[str | bytes]) -> Any:
        ptrs = [self.cstr(i) for i in items]
        arr = ffi.new("char *[]", [*ptrs, ffi.NULL])
        self.keep.append(arr)
        return arr

    def array(self, ctype: str, items: Any) -> Any:
        arr = ffi.new(ctype, items)
        self.keep.append(arr)
        return arr


def _failure_object(
    stage: Stage, index: int, c: Container, path: str, joins: Sequence[Any]
) -> str | None:
    if stage == Stage.EXEC:
        return path
    if stage == Stage.CHDIR:
        return c.cwd
    if stage == Stage.HOSTNAME:
        return c.hostname or "nscg"
    if stage == Stage.DOMAINNAME:
        return c.domainname
    if stage == Stage.SETNS and 0 <= index < len(joins):
        if joins[index].kind == Namespace.NONE:
            return "root directory"
        return f"{joins[index].kind.proc_name} namespace"
    if stage == Stage.RLIMITS and 0 <= index < len(c.rlimits):
        return rlimit_name(c.rlimits[index].resource)
    if stage == Stage.TIMENS:
        return "/proc/self/timens_offsets"
    if stage in (Stage.MOUNTS, Stage.PIVOT_ROOT) and c.rootfs is not None:
        from nscg._rootfs_run import failure_label

        return failure_label(c, stage, index)[1]
    return None


def spawn(
    c: Container,
    argv: Sequence[str],
    *,
    stdin: StdioSpec = None,
    stdout: StdioSpec = None,
    stderr: StdioSpec = None,
    pass_fds: Sequence[int] = (),
    executable: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    text: bool | None = None,
    encoding: str | None = None,
    errors: str | None = None,
    universal_newlines: bool | None = None,
    _fault: tuple[Stage, int, int] | None = None,
    _extra_flags: int = 0,
    _kill_if_dropped: bool = False,
) -> AnyProcess:
    """Spawn ``argv`` in the sandbox ``c`` (see :meth:`Container.spawn`).

    ``_fault`` (stage, errno, op index) makes that stage fail on purpose and
    ``_extra_flags`` adds NSCG_F_* flags: both are for tests only.
    ``_kill_if_dropped``: the Process is killed if dropped unclosed (run()'s).
    """
    started = time.monotonic()  # (the Process's wall_time counts from here)
    codec = text_codec(text, encoding, errors, universal_newlines)
    given = with_call(c, env, cwd)
    for attempt in range(_STALE_TRIES):
        # a prepared plan whose assumptions no longer hold (the C call checks
        # them right before its clone: see _Prepared.checks) is made again
        prep = _prepare(given, fresh=attempt > 0)
        c = prep.own if prep.own is not None else given
        root: Any = None
        labels: Any = None
        if prep.per_spawn_root:
            # overlays: upper and work directories of this spawn's own
            from nscg._rootfs_run import RootfsRun

            maps = (prep.maps[0], prep.maps[1]) if prep.idmap and prep.maps is not None else None
            root = RootfsRun(c, prep.etc, maps)
        elif prep.prims is not None:
            from nscg._rootfs_run import _current as labels

            labels.run = (c, prep.prims)  # for failure labels, during this spawn
        try:
            return _spawn(
                prep,
                c,
                argv,
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                pass_fds=pass_fds,
                executable=executable,
                _codec=codec,
                _fault=_fault,
                _extra_flags=_extra_flags,
                _root=root,
                _kill_if_dropped=_kill_if_dropped,
                _started=started,
                # (the last try: the plan as just prepared, as before the checks)
                _checks=attempt < _STALE_TRIES - 1,
            )
        except _Stale:
            if root is not None:
                root.cleanup()
        except BaseException:
            if root is not None:
                root.cleanup()
            raise
        finally:
            if labels is not None:
                labels.run = None
    raise AssertionError("unreachable: the last try does not check")  # pragma: no cover


# ------------------------------------------------------- per-call arguments
#: Containers made for per-call ``env``/``cwd``: (id of the spec, env, cwd) ->
#: (weak ref to the spec, the derived spec), so that repeated calls with the
#: same arguments reuse one derived spec and its prepared plan
_per_call: dict[tuple[int, Any, str | None], tuple[Any, Container]] = {}
_PER_CALL_MAX = 32


def with_call(c: Container, env: Mapping[str, str] | None, cwd: str | None) -> Container:
    """``c`` with this call's ``env`` and ``cwd`` (each None: the spec's own).

    A call without them runs ``c`` itself (its prepared plan is cached with
    it); with them, a derived spec, kept for the next call with the same ones.

    Raises:
        SpecError: an invalid environment or working directory.
    """
    if env is None and cwd is None:
        return c
    env_items = _env_conv(env) if env is not None else None
    key = (id(c), env_items, cwd)
    ent = _per_call.get(key)
    if ent is not None and ent[0]() is c:
        return ent[1]
    changes: dict[str, Any] = {}
    if env_items is not None:
        changes["env"] = env_items
    if cwd is not None:
        if not isinstance(cwd, str):
            raise SpecError(f"cwd must be a str, got {cwd!r}")
        changes["cwd"] = cwd
    derived = attrs.evolve(c, **changes)
    # (no lock, so that a signal handler's spawn cannot deadlock on it: the
    # oldest entries go; another thread evicting at the same time is harmless)
    while len(_per_call) >= _PER_CALL_MAX:
        try:
            _per_call.pop(next(iter(_per_call)), None)
        except (StopIteration, RuntimeError):  # emptied, or resized meanwhile
            break
    _per_call[key] = (weakref.ref(c), derived)
    return derived


#: tries of a spawn whose prepared plan turned out stale (host sockets churning)
_STALE_TRIES = 3


class _Stale(Exception):
    """The C spawn found the prepared plan stale (nothing was cloned): prepare again."""


# ------------------------------------------------------------ prepared plans
class _Prepared:
    """A Container's spawn plan, made at its first spawn and reused by the next ones.

    Everything a spawn needs that depends only on the (frozen) Container and on
    who this process is: validation, the environment, the id maps and how they
    are written, the flags, capability masks and seccomp program, the /etc files
    of a RootFS and its flattened mount plan (unless it has overlays, whose
    directories are per spawn). ``key`` says for whom it was made; a spawn
    copies the template struct and adds what is its own (argv, the program's
    path, fds, pipes, cgroup, parent-death pidfd).
    """

    def __init__(
        self,
        c: Container,
        key: tuple[Any, ...],
        cap_eff: int,
        masks: tuple[str, ...] | None,
        listing: bytes | None,
    ) -> None:
        c.validate()
        #: files the child writes for the sandbox (/etc/hosts...): see _with_etc_files
        self.etc: tuple[tuple[str, bytes, str], ...] = ()
        if c.rootfs is not None:
            self.etc = _with_etc_files(c)
        self.key = key
        #: what the plan assumes about the caller, checked by the C spawn
        #: right before each clone (see :meth:`set_checks`)
        self.cap_eff = cap_eff
        self.masks = masks
        self.listing_buf: Any = None
        #: the Container to run when it is not the one given (None: the one given)
        self.own: Container | None = None
        ns = c.namespaces
        self.joins = sorted(c.join, key=lambda r: JOIN_ORDER.index(r.kind))
        uid_in = c.user if c.user is not None else 0
        self.env = (
            dict(c.env)
            if c.env is not None
            else _default_env(uid_in if ns & Namespace.USER else os.geteuid())
        )
        self.path_var = self.env.get("PATH", DEFAULT_PATH)
        self.maps = _plan_maps(c, cap_eff) if ns & Namespace.USER else None
        self.late = bool(self.joins) and bool(ns & ~Namespace.TIME)
        self.pid_ns = bool(ns & Namespace.PID)
        self.per_spawn_root = c.rootfs is not None and bool(c.rootfs.overlays())
        self.prims: list[Any] | None = None
        #: whether writable binds get idmapped trees (see nscg._idmap)
        self.idmap = self.maps is not None and _idmap.wants_idmap(
            self.maps[0], self.maps[1], cap_eff
        )
        #: the template's idmapped binds (made per spawn), and its bind slots
        self.idmap_binds: list[_idmap.IdBind] = []
        self.n_slots = 0
        self.tmpl = t = _Plan()
        self.flags = self._fill(t, c, cap_eff)
        if c.rootfs is not None and not self.per_spawn_root:
            from nscg._rootfs_run import RootfsRun

            # no overlay: nothing of its own to clean up
            run = RootfsRun(c, self.etc, masks=masks)
            run.fill(t, t.plan)
            self.prims = run.prims
            if self.idmap:
                self.idmap_binds = _idmap.binds_to_idmap(c.rootfs.ops, run.prims)
            self.n_slots = _idmap.mark(t.plan, run.prims, self.idmap_binds)
        self.set_checks(cap_eff, listing)

    def set_checks(self, cap_eff: int, listing: bytes | None) -> None:
        """What the C spawn checks before its clone: the caller's effective
        capabilities, and the host's path sockets as listed when the masks
        were computed (``listing``: see :func:`nscg.rootfs.host_socket_listing`;
        None: no masks to keep current). Checked there, these cost no release
        of the GIL of their own (with another thread busy, each costs up to
        the 5 ms switch interval)."""
        plan = self.tmpl.plan
        checks = lib.NSCG_CHECK_CAPS
        plan.key_cap_eff = cap_eff
        if listing is not None:
            buf = ffi.new("char[]", listing)  # (NUL-terminated)
            self.listing_buf = buf
            plan.unix_paths = buf
            checks |= lib.NSCG_CHECK_SOCKETS
        plan.checks = checks

    def _fill(self, p: _Plan, c: Container, cap_eff: int) -> int:
        """Write the static part of the plan into ``p``; return its flags."""
        plan = p.plan
        maps = self.maps
        self.mode = choose_mode(
            c, Caller(maps_by_write=maps is not None and maps[2] == maps[3] == "write")
        )
        flags = mode_flags(self.mode)
        if self.mode.maps == "c":
            # the maps, written by the C call right after the clone
            plan.uid_map_text = p.cstr(_map_text(maps[0]))  # type: ignore[index]
            plan.gid_map_text = p.cstr(_map_text(maps[1]))  # type: ignore[index]
            plan.deny_setgroups = int(maps[4])  # type: ignore[index]
        flags |= _fill_namespaces(p, c) | self._fill_identity(p, c, cap_eff)
        flags |= _fill_confinement(p, c, cap_eff, self.joins)
        _fill_limits_env(p, c, self.env)
        err = lib.nscg_check_flags(flags)
        if err:  # (a bug of ours: a combination no path of spawn.c serves)
            raise RuntimeError(f"nscg: impossible spawn flags {flags:#x} (mode {self.mode})")
        return flags

    def _fill_identity(self, p: _Plan, c: Container, cap_eff: int) -> int:
        """Who the payload is: uid, gid, groups (and whether it becomes root early)."""
        plan, maps, ns = p.plan, self.maps, c.namespaces
        flags = 0
        if maps is not None and _root_elsewhere(maps[0], maps[1]):
            flags |= lib.NSCG_F_ROOT_EARLY
        elif (
            maps is None
            and any(r.kind == Namespace.USER for r in self.joins)
            and os.geteuid() == 0
            and in_initial_userns()
        ):
            # a joined user namespace (another sandbox's) need not map host
            # root: become its root, as the process that made it is
            flags |= lib.NSCG_F_ROOT_EARLY
        if ns & Namespace.USER:
            flags |= lib.NSCG_F_SETID
            plan.uid = c.user if c.user is not None else 0
            plan.gid = c.group if c.group is not None else 0
            if cap_eff >> _CAP_SETGID & 1 and maps is not None and not maps[4]:
                flags |= lib.NSCG_F_SETGROUPS
        elif c.user is not None or c.group is not None:
            flags |= lib.NSCG_F_SETID
            plan.uid = c.user if c.user is not None else os.getuid()
            plan.gid = c.group if c.group is not None else os.getgid()
            if c.groups is not None or os.geteuid() == 0:
                flags |= lib.NSCG_F_SETGROUPS
        elif c.groups is not None:
            flags |= lib.NSCG_F_SETGROUPS
        groups = list(c.groups or ())
        plan.n_groups = len(groups)
        plan.groups = p.array("uint32_t[]", groups) if groups else ffi.NULL
        return flags

    def new_plan(self) -> _Plan:
        """A copy of the template for one spawn (it keeps the template's buffers alive)."""
        p = _Plan.__new__(_Plan)
        buf = self.listing_buf
        p.keep = [self.tmpl, buf]
        p.plan = ffi.new("struct nscg_plan *", self.tmpl.plan[0])
        p._new_state()
        if buf is not None:
            p.plan.unix_paths = buf  # (kept by p: set_checks may replace it meanwhile)
        return p


def _fill_namespaces(p: _Plan, c: Container) -> int:
    """What the child sets up in its new namespaces (init, loopback, time, names)."""
    plan, ns = p.plan, c.namespaces
    flags = 0
    if c.init and ns & Namespace.PID:
        flags |= lib.NSCG_F_INIT
    if ns & Namespace.NET:
        flags |= lib.NSCG_F_LOOPBACK
    if ns & Namespace.TIME:
        flags |= lib.NSCG_F_NEWTIME
        if c.time_offsets is not None:
            plan.timens_offsets = p.cstr(c.time_offsets.text())
    if c.new_session:
        flags |= lib.NSCG_F_SETSID
    if ns & Namespace.UTS:
        plan.hostname = p.cstr(c.hostname if c.hostname is not None else "nscg")
        plan.domainname = p.cstr(c.domainname)
    plan.ns_new = int(ns)
    return flags


def _fill_confinement(p: _Plan, c: Container, cap_eff: int, joins: Sequence[Any]) -> int:
    """Capabilities, no_new_privs and seccomp: applied last, right before execve."""
    plan, ns = p.plan, c.namespaces
    flags = lib.NSCG_F_NO_NEW_PRIVS if c.no_new_privs else 0
    if c.capabilities != "inherit":
        caps = _caps_masks(c.capabilities)
        flags |= lib.NSCG_F_CAPS
        plan.cap_bounding, plan.cap_permitted, plan.cap_effective = caps[0], caps[1], caps[2]
        plan.cap_inheritable, plan.cap_ambient, plan.cap_last = caps[3], caps[4], caps[5]
        joins_user = any(r.kind == Namespace.USER for r in joins)
        if ns & Namespace.USER or joins_user or cap_eff >> _CAP_SETPCAP & 1:
            flags |= lib.NSCG_F_CAPS_BOUNDING
        elif not c.no_new_privs:
            raise UnsupportedError(
                "dropping capabilities from the bounding set needs CAP_SETPCAP or a user "
                "namespace; with no_new_privs off the payload could regain them",
                feature="capabilities",
            )
    if c.seccomp != "unconfined":
        prog = _seccomp_policy.program(c.seccomp, c.capabilities)
        plan.seccomp_filter = p.array("char[]", prog)
        plan.seccomp_len = len(prog) // 8
        flags |= lib.NSCG_F_SECCOMP
    return flags


def _fill_limits_env(p: _Plan, c: Container, env: dict[str, str]) -> None:
    """rlimits, the environment and the working directory."""
    plan = p.plan
    if c.rlimits:
        rl = p.array("struct nscg_rlimit[]", len(c.rlimits))
        for i, lim in enumerate(c.rlimits):
            rl[i].resource = lim.resource
            rl[i].cur = lim.soft
            rl[i].max = lim.hard
        plan.rlimits = rl
        plan.n_rlimits = len(c.rlimits)
    plan.envp = p.cstr_array([f"{k}={v}" for k, v in env.items()])
    # (None with a root of its own: the mount plan keeps the caller's working
    # directory if the new root has it, NSCG_MOUNTS_KEEP_CWD, else "/")
    plan.cwd = p.cstr(c.cwd)


_prepared: dict[int, tuple[Any, _Prepared]] = {}


def _forget(key: int, ref: Any, _cache: dict[int, tuple[Any, _Prepared]] = _prepared) -> None:
    # (the dict is bound here: at interpreter exit module globals may be gone)
    ent = _cache.get(key)
    if ent is not None and ent[0] is ref:
        del _cache[key]


def _prepare(c: Container, fresh: bool = False) -> _Prepared:
    """The prepared plan of ``c``: made once per Container and caller identity.

    Made again when the caller changed: another process (a fork), another
    euid/egid, (for the default environment) another ``TERM``; and, with
    ``fresh`` (the C spawn found the plan stale: see :meth:`_Prepared.set_checks`),
    other effective capabilities or (for a root that hides the host's sockets
    and has no overlay, whose plan is made per spawn anyway) another set of
    host sockets to mask. Those two are checked by the C call at every
    spawn, right before its clone, so a socket that appeared after the first
    spawn is masked too.
    """
    import weakref

    key = (
        os.getpid(),
        os.geteuid(),
        os.getegid(),
        os.environ.get("TERM") if c.env is None else None,
    )
    ent = _prepared.get(id(c))
    prep = ent[1] if ent is not None and ent[0]() is c and ent[1].key == key else None
    if prep is not None and not fresh:
        return prep
    cap_eff = _cap_eff()
    root = c.rootfs
    masks: tuple[str, ...] | None = None
    listing: bytes | None = None
    if root is not None and root.hide_sockets and not root.overlays():
        from nscg.rootfs import host_socket_listing

        listing, listed = host_socket_listing()
        masks = root.socket_masks(listed)
    if prep is not None and prep.cap_eff == cap_eff and prep.masks == masks:
        prep.set_checks(cap_eff, listing)  # (the same plan: only the listing moved)
        return prep
    prep = _Prepared(c, key, cap_eff, masks, listing)
    _prepared[id(c)] = (weakref.ref(c, functools.partial(_forget, id(c))), prep)
    return prep


def _with_etc_files(c: Container) -> tuple[tuple[str, bytes, str], ...]:
    """The /etc/hosts (and resolv.conf) nscg gives a sandbox with its own root and hostname.

    Like Docker: the sandbox's hostname resolves (to its own address on a veth
    or bridge network, else 127.0.1.1), and /etc/resolv.conf lists no name
    server the sandbox cannot reach. Each file is bound read-only over the
    root's own, only where the root has one and the plan does not already put
    something there. The files are written by the child into the sandbox's
    scratch memory (see ``_native/mount.c``): they never have a host path.
    Returns (path inside, content, the host directory holding the root's own
    file) for each.
    """
    root = c.rootfs
    assert root is not None
    if not c.namespaces & Namespace.UTS and c.network is None:
        return ()
    paths = ["/etc/hosts"]
    if c.namespaces & Namespace.NET:  # the host's resolver is out of reach
        paths.append("/etc/resolv.conf")
    targets: list[tuple[str, str]] = []
    for path in paths:
        if any(op.dest == path for op in root.ops):
            continue
        hosts = root.host_paths(path)
        found = [h for h in hosts or () if os.path.isfile(h)]
        if found:
            targets.append((path, os.path.dirname(found[0])))
    if not targets:
        return ()
    from nscg.network import Network

    name = c.hostname or "nscg"
    net = c.network if c.network is not None else Network.none()
    texts = {
        "/etc/hosts": net.hosts_entries(name),
        "/etc/resolv.conf": net.resolv_conf(),
    }
    return tuple((path, os.fsencode(texts[path]), where) for path, where in targets)


def _caller_cwd_join(target: str) -> list[str]:
    """``target`` under the caller's working directory (none if it has none)."""
    try:
        return [os.path.join(os.getcwd(), target)]
    except OSError:  # (deleted)
        return []


def _resolve_in_rootfs(c: Container, name: str, path_var: str, executable: str | None) -> str:
    """resolve_executable, in the sandbox's root when it has its own (see RootFS.host_paths)."""
    if c.rootfs is None:
        # entering a sandbox with a root of its own: look inside that root
        root = next((r for r in c.join if r.kind == Namespace.NONE), None)
        where = "/" if root is None else f"/proc/self/fd/{root.fileno()}"
        return resolve_executable(name, path_var, executable, root=where, cwd=c.cwd)
    target = executable or name
    if "/" in target:
        if target.startswith("/"):
            cand = [target]
        elif c.cwd is not None:
            cand = [os.path.join(c.cwd, target)]
        else:  # the caller's working directory if the root has it (NSCG_MOUNTS_KEEP_CWD), or /
            cand = [*_caller_cwd_join(target), os.path.join("/", target)]
    else:
        cand = [os.path.join(d or ".", target) for d in path_var.split(":")]
    denied: str | None = None
    for sandbox_path in cand:
        hosts = c.rootfs.host_paths(os.path.normpath(sandbox_path))
        if hosts is None:
            if "/" in target and sandbox_path == cand[-1]:
                return sandbox_path  # made by the plan: the child's execve will tell
            continue
        if any(os.path.isfile(h) and os.access(h, os.X_OK) for h in hosts):
            return sandbox_path
        if denied is None and any(os.path.exists(h) for h in hosts):
            denied = sandbox_path
    if denied is not None:
        raise _not_executable(denied, " in the sandbox's root")
    where = f" {'on PATH ' + repr(path_var) if '/' not in target else ''}".rstrip()
    raise ExecutableNotFoundError(
        errno.ENOENT, f"executable {target!r} not found in the sandbox's root{where}", target
    )


class _Run(NamedTuple):
    """One spawn's facts its steps after the clone need (for the failure messages too)."""

    c: Container
    argv: list[str]
    path: str
    #: the program was looked up before the clone (else left to execve)
    checked: bool
    executable: str | None
    prep: _Prepared
    flags: int
    fault: tuple[Stage, int, int] | None


def _checked_argv(argv: Sequence[str]) -> list[str]:
    if isinstance(argv, (str, bytes)) or not argv:
        raise SpecError("argv must be a non-empty sequence of strings")
    out = [os.fsdecode(a) if isinstance(a, bytes) else a for a in argv]
    for a in out:
        if not isinstance(a, str) or "\0" in a:
            raise SpecError(f"invalid argument {a!r}")
    return out


def _spawn(
    prep: _Prepared,
    c: Container,
    argv: Sequence[str],
    *,
    stdin: StdioSpec = None,
    stdout: StdioSpec = None,
    stderr: StdioSpec = None,
    pass_fds: Sequence[int] = (),
    executable: str | None = None,
    _codec: tuple[str, str] | None = None,
    _fault: tuple[Stage, int, int] | None = None,
    _extra_flags: int = 0,
    _root: Any = None,
    _kill_if_dropped: bool = False,
    _checks: bool = True,
    _started: float | None = None,
) -> AnyProcess:
    args = _checked_argv(argv)
    _before_spawn(prep)
    flags = prep.flags | _extra_flags
    if _fault is not None and _fault[0] == Stage.ID_MAPS:
        # the test hook is on the Python side: the Python-steps mode
        flags &= ~(lib.NSCG_F_PARENT_MAPS | lib.NSCG_F_WAIT_EXEC)
    prog = executable or args[0]
    # An absolute path run vfork-style is left to execve: a missing program
    # costs a clone that fails, not namespaces, and is told apart below.
    checked = not (flags & lib.NSCG_F_VFORK and prog.startswith("/") and c.rootfs is None)
    path = _resolve_in_rootfs(c, args[0], prep.path_var, executable) if checked else prog

    run = _Run(c, args, path, checked, executable, prep, flags, _fault)
    p, idmap_binds, n_slots = _spawn_plan(run, _root, _checks)
    plan = p.plan

    # From here on one guard owns everything the spawn makes (the lifetime
    # rule: see _Flight); its abort() is the only failure path.
    flight = _Flight(p)
    try:
        n_fds = _fill_stdio(flight, (stdin, stdout, stderr), pass_fds)
        if n_slots:
            flight.fds.trees = p.array("int32_t[]", [-1] * n_slots)
            flight.fds.n_trees = n_slots
            lowers = _root.take_lower_trees() if _root is not None else ()
            _idmap.open_trees(p, plan, n_slots, idmap_binds, prep.maps, flight.fds.trees, lowers)
        # the child's working memory for its fds (abi.h: nscg_spawn_state.scratch)
        n_scratch = n_fds + 2 * len(prep.joins) + n_slots + lib.NSCG_SCRATCH_CHANNELS
        p.state.scratch = p.array("int32_t[]", n_scratch)
        p.state.n_scratch = n_scratch
        plan.flags = _fill_spawn(flight, run)

        # the one C call: the checks, the pipes, the status page (with a pid
        # namespace), the clone, and in the in-C mode everything up to the exec
        lib.nscg_spawn(plan, flight.out)
        _cloned(flight, c)
        _AFTER_CLONE[_mode_of(flags)](flight, run)
        flight.close_err()
        proc = flight.process(args, c, prep.pid_ns, _kill_if_dropped, _started)
        if _codec is not None:
            proc._text_mode(*_codec)
        if _root is not None:
            _root.attach(proc)  # (its temp dirs: removed by spawn() if aborted)
        flight.done()
    except BaseException:
        flight.abort()
        raise
    return proc


def _before_spawn(prep: _Prepared) -> None:
    """Checks and chores before a spawn: closed joins; abandoned sandboxes, dropped guards."""
    for r in prep.joins:
        if r.closed:
            raise SpecError(f"namespace reference {r!r} is closed")
    if _abandoned_pending():
        reap_abandoned()
    if _in_flight:
        _sweep_flights()


def _spawn_plan(run: _Run, root: Any, checks: bool) -> tuple[_Plan, list[Any], int]:
    """This spawn's copy of the prepared plan: (it, its idmapped binds, its bind slots)."""
    prep, c = run.prep, run.c
    p = prep.new_plan()
    plan = p.plan
    plan.path = p.cstr(run.path)
    plan.argv = p.cstr_array(run.argv)
    idmap_binds, n_slots = prep.idmap_binds, prep.n_slots
    if root is not None:
        root.fill(p, plan)
        if prep.idmap and c.rootfs is not None:
            idmap_binds = _idmap.binds_to_idmap(c.rootfs.ops, root.prims)
        n_slots = _idmap.mark(plan, root.prims, idmap_binds)
    if not checks:
        plan.checks = 0
    if run.fault is not None:
        f = run.fault
        plan.fault.stage, plan.fault.err, plan.fault.index = int(f[0]), f[1], f[2]
    return p, idmap_binds, n_slots


def _cloned(flight: _Flight, c: Container) -> None:
    """Right after nscg_spawn: the child's fds closed; a stale plan, a failed clone raise."""
    out = flight.out
    if out.err_closed:
        flight.fds.slot[_Fds.ERR_W] = -1  # closed by the C call
    flight.fds.close_child_side()
    if out.stale:
        raise _Stale  # (nothing was cloned)
    if out.err:
        raise _clone_error(out.err, ffi.string(out.syscall).decode(), c.namespaces)
    flight.check_interrupted()


def _fill_stdio(flight: _Flight, stdio: tuple[StdioSpec, ...], pass_fds: Sequence[int]) -> int:
    """The child's fds (stdio, pass_fds) into the plan; return their number."""
    p, fds = flight.p, flight.fds
    plan = p.plan
    fdmap: list[tuple[int, int]] = []
    out_child: int | None = None
    for target, spec in enumerate(stdio):
        child_fd, parent = _stdio(spec, target, fds, out_child)
        if target == 1:
            out_child = child_fd
        if child_fd is not None:
            fdmap.append((child_fd, target))
        if parent is not None:
            # (no call between taking the fd and the file owning it: a
            # handler's exception lands after open(), which then closes it)
            fd = fds.slot[parent]
            fds.slot[parent] = -1
            flight.files[target] = open(fd, "wb" if target == 0 else "rb", buffering=0)  # noqa: SIM115
    for fd in pass_fds:
        if not isinstance(fd, int) or fd < 0:
            raise SpecError(f"invalid fd in pass_fds: {fd!r}")
        if fd in (0, 1, 2):
            raise SpecError("pass_fds must not contain 0, 1 or 2 (use stdin/stdout/stderr)")
        try:
            os.fstat(fd)
        except OSError:
            raise SpecError(f"fd {fd} in pass_fds is not open") from None
        fdmap.append((fd, fd))
    plan.n_fdmap = len(fdmap)
    if fdmap:
        plan.fdmap = p.array("struct nscg_fdmap[]", fdmap)
    plan.fd_floor = max([3] + [dst + 1 for _, dst in fdmap])
    return len(fdmap)


def _fill_spawn(flight: _Flight, run: _Run) -> int:
    """The rest of this spawn's plan (joins, cgroup, pipes, parent death); its flags."""
    p, fds, c, flags = flight.p, flight.fds, run.c, run.flags
    plan = p.plan
    joins = run.prep.joins
    if joins:
        jn = p.array("struct nscg_join[]", len(joins))
        for i, r in enumerate(joins):
            jn[i].fd, jn[i].nstype = r.fileno(), int(r.kind)
        plan.joins = jn
        plan.n_join = len(joins)
    if c.cgroup is not None:
        # created (limits written) before anything runs; raises the clear
        # UnsupportedError on a host that cannot give what was asked
        from nscg.cgroups import CgroupV2

        cg_spec = c.cgroup

        def make_cgroup() -> None:
            # (shielded: a handler's exception cannot lose the new cgroup)
            flight.cgroup = CgroupV2.create(cg_spec.limits, parent=cg_spec.parent)
            fds.slot[fds.CGROUP] = flight.cgroup.open_fd()

        _shielded(make_cgroup, flight.track_steps)
        fds.child_side.append(fds.CGROUP)
        plan.cgroup_fd = fds.slot[fds.CGROUP]
    # the error and go-ahead pipes: made by the C call into our slots,
    # each end closed there as soon as it is done with
    make = 0 if flags & lib.NSCG_F_VFORK else lib.NSCG_MAKE_ERR_PIPE
    if flags & lib.NSCG_F_WAIT_PARENT:
        make |= lib.NSCG_MAKE_SYNC_PIPE
    plan.make = make
    plan.slots = fds.slot
    if c.die_with_parent:
        plan.pdeathsig = signal.SIGKILL
        plan.parent_pidfd = _own_pidfd()
    if not c.die_with_parent or threading.get_ident() == threading.main_thread().ident:
        # The parent-death signal follows the thread that cloned; the main
        # thread lives as long as the interpreter, so it can clone itself
        # (no hop to a spawner thread). Other threads hand off to one.
        flags |= lib.NSCG_F_NO_SPAWNER_THREAD
    if flags & lib.NSCG_F_INIT:
        plan.init_fd = _init_fd()
    return flags


def _mode_of(flags: int) -> Mode:
    """The mode a spawn's flags select (the prepared mode, or a test hook's)."""
    if flags & lib.NSCG_F_VFORK:
        return Mode.VFORK
    return Mode.IN_C if flags & lib.NSCG_F_WAIT_EXEC else Mode.PYTHON_STEPS


# ------------------------------------------------ after the clone, per mode
def _after_vfork(flight: _Flight, run: _Run) -> None:
    """VFORK: the clone returned once the payload exec'd; a failure's report is in memory."""
    ce = flight.out.child_err
    if ce.stage:
        if ce.stage == Stage.EXEC and not run.checked:
            # ExecutableNotFoundError if that is why (as if checked first)
            _resolve_in_rootfs(run.c, run.argv[0], run.prep.path_var, run.executable)
        _raise_child_error(_decode_record(ce), run.c, run.path, run.prep.joins)


def _after_in_c(flight: _Flight, run: _Run) -> None:
    """IN_C: the C call wrote the maps and the go-ahead and waited for the exec."""
    if run.flags & lib.NSCG_F_PARENT_MAPS:
        _maps_written(flight, run.c, run.path, run.prep.joins)
    _exec_result(flight, run)


def _after_python_steps(flight: _Flight, run: _Run) -> None:
    """PYTHON_STEPS: our steps while the first child waits, the go-ahead, the wait."""
    if run.flags & lib.NSCG_F_WAIT_PARENT:
        # the first child waits for the go-ahead (on its own stack, in our
        # memory), written here after our steps (from the main thread on a
        # thread of their own: no signal handler cuts a step in two; see
        # process._shielded)
        _shielded(lambda: _parent_steps(flight, run), flight.track_steps)
        flight.close_sync()
    lib.nscg_spawn_wait(flight.p.plan, flight.out)  # aborts the spawn itself if a handler raised
    flight.check_interrupted()
    _exec_result(flight, run)


_AFTER_CLONE: dict[Mode, Callable[[_Flight, _Run], None]] = {
    Mode.VFORK: _after_vfork,
    Mode.IN_C: _after_in_c,
    Mode.PYTHON_STEPS: _after_python_steps,
}


def _exec_result(flight: _Flight, run: _Run) -> None:
    """Raise the child's failure the C wait read, if any (EOF: the payload exec'd)."""
    out = flight.out
    if run.flags & lib.NSCG_F_FORK_PIDNS:
        if out.first_status != 0:
            _raise_child_error(_record_of(out), run.c, run.path, run.prep.joins)
        if out.pidfd2 < 0:
            raise SpawnError(-out.pidfd2, "pidfd_open", Stage.FORK, -1, str(out.pid2))
    rec = _record_of(out)
    if rec is not None:
        _raise_child_error(rec, run.c, run.path, run.prep.joins)


def _maps_written(flight: _Flight, c: Container, path: str, joins: Sequence[Any]) -> None:
    """Raise the failure of the id maps the C call wrote (NSCG_F_PARENT_MAPS), if any."""
    out = flight.out
    if out.maps_err:
        rec = _read_record(flight.err_r) if _child_exited(out.pidfd) else None
        if rec is not None:
            _raise_child_error(rec, c, path, joins)
        what = ("uid_map", "setgroups", "gid_map", "")[min(out.maps_file, 3)]
        where = f"/proc/{out.pid}/{what}" if what else "the go-ahead pipe"
        raise SpawnError(out.maps_err, "write", Stage.ID_MAPS, -1, where)


def _parent_steps(flight: _Flight, run: _Run) -> None:
    """What the caller does while the first child waits for the go-ahead."""
    out = flight.out
    c, path, joins, flags, maps, _fault = (
        run.c,
        run.path,
        run.prep.joins,
        run.flags,
        run.prep.maps,
        run.fault,
    )
    if run.prep.late:
        rec = _read_record(flight.err_r)
        if rec is None or rec[1] != lib.NSCG_STAGE_READY:
            _raise_child_error(rec, c, path, joins)
    try:
        if _fault is not None and _fault[0] == Stage.ID_MAPS:
            raise SpawnError(_fault[1], "write", Stage.ID_MAPS, -1, f"/proc/{out.pid}/uid_map")
        if maps is not None:
            _write_maps(out.pid, *maps)
        cgroup = flight.cgroup
        if cgroup is not None and (
            flags & lib.NSCG_F_FORCE_CLONE_FALLBACK
            or not lib.nscg_clone_features() & lib.NSCG_HAS_CLONE_INTO_CGROUP
        ):
            cgroup.add_pid(out.pid)  # no clone3: placed before it runs on
        for hook in _parent_hooks(c):
            flight.cleanups.append(hook.attach(out.pid))
        os.write(flight.sync_w, b"\x01")
    except OSError:
        # the child died before the go: its own report explains why
        rec = _read_record(flight.err_r) if _child_exited(out.pidfd) else None
        if rec is not None:
            _raise_child_error(rec, c, path, joins)
        raise


# ------------------------------------------------------- the lifetime rule
#: Spawns between their clone and their end (handed over or aborted), by
#: id(out): a guard's weak reference, the plan and out struct it keeps, the
#: pid that made it, and its fd slots.
#: The memory children may use stays alive here even if a guard's abort was
#: itself interrupted (a second signal handler raising at the wrong bytecode);
#: the next spawn aborts what such a dropped guard left (_sweep_flights).
_in_flight: dict[int, tuple[Any, _Plan, Any, int, Any]] = {}


class _Flight:
    """The one guard of a spawn: the lifetime rule, enforced in one place.

    From the clone on, nothing leaves the spawn until every task that shares
    our memory or stack has exec'd or exited, and every process of a failed
    or abandoned spawn is killed and reaped. The C waits abort the spawn
    themselves when a signal handler raises (so they never return while a
    child runs on the plan or a pooled stack); every other way out, any
    exception from the clone to the hand-over, goes through :meth:`abort`,
    which asks C to kill and reap (``nscg_spawn_abort``: pidfds, the pid-1
    pid the kernel stored in the status page) and then closes what Python
    holds. The plan and the stack stay alive (``p``, ``out``, and the
    registry) until then.
    """

    def __init__(self, p: _Plan) -> None:
        self.fds = _Fds()
        self.files: list[Any] = [None, None, None]
        self.cgroup: Any = None
        self.cleanups: list[Callable[[], None]] = []
        self.steps: Callable[[], None] | None = None
        self.proc: AnyProcess | None = None
        self.p = p
        self.pid = os.getpid()  # (a forked copy of this guard owns nothing)
        out = ffi.new("struct nscg_spawn_out *")
        out.pid = out.pidfd = out.pidfd2 = -1
        out.settled = 1  # (nothing to abort before the registration)
        self.out = out
        _in_flight[id(out)] = (weakref.ref(self), p, out, self.pid, self.fds.slot)
        out.settled = 0

    def check_interrupted(self) -> None:
        """Raise what a signal handler raised during a C wait (the spawn is aborted)."""
        if self.out.interrupted:
            exc = getattr(_raised, "exc", None)
            _raised.exc = None
            if exc is None:  # (its handler's exception was lost on the way)
                exc = SpawnError(errno.EINTR, "waitid", Stage.NONE, detail="spawn interrupted")
            raise exc

    @property
    def err_r(self) -> int:
        return int(self.fds.slot[_Fds.ERR_R])

    @property
    def sync_w(self) -> int:
        return int(self.fds.slot[_Fds.SYNC_W])

    def track_steps(self, wait_end: Callable[[], None]) -> None:
        self.steps = wait_end

    def close_sync(self) -> None:
        self.fds.close(_Fds.SYNC_W)

    def close_err(self) -> None:
        self.fds.close(_Fds.ERR_R)

    def process(
        self,
        argv: list[str],
        c: Container,
        pid_ns: bool,
        kill_if_dropped: bool,
        started: float | None = None,
    ) -> AnyProcess:
        """Hand the sandbox over to a new :class:`Process` (see :meth:`done`)."""
        out = self.out
        main_pid, main_fd = (out.pid2, out.pidfd2) if out.pidfd2 >= 0 else (out.pid, out.pidfd)
        shared = None if out.shared == ffi.NULL else out.shared
        proc = self.proc = Process.__new__(Process)
        proc.__init__(  # type: ignore[misc]  # (made first: abort() knows it at once)
            args=argv,
            pid=int(main_pid),
            pidfd=int(main_fd),
            shared=shared,
            container=c,
            stdin=self.files[0],
            stdout=self.files[1],
            stderr=self.files[2],
            whole_sandbox_by_pid1=pid_ns,
            process_group=int(main_pid) if c.new_session else None,
            cgroup=self.cgroup,
        )
        proc._cleanups.extend(self.cleanups)
        proc._kill_if_dropped = kill_if_dropped
        proc._rss_floor_kb = int(out.caller_maxrss_kb)
        if started is not None:
            proc._started = started
        return proc

    def done(self) -> None:
        """The Process owns the sandbox now: nothing to abort."""
        self.out.settled = 1
        _in_flight.pop(id(self.out), None)

    def abort(self) -> None:
        """Kill and reap every process of this spawn, then release what it holds."""
        out = self.out
        if out.settled or self.pid != os.getpid():
            return
        lib.nscg_spawn_abort(self.p.plan, out)  # children gone: stack and page released
        if self.proc is not None:
            self.proc._disown()
        if self.steps is not None:  # the parent steps' thread: its undos come after it
            self.steps()
        if out.err_closed:
            self.fds.slot[_Fds.ERR_W] = -1  # (closed by the C call)
        self.fds.close_all()
        for f in self.files:
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()
        _run_cleanups(self.cleanups)
        cgroup, self.cgroup = self.cgroup, None
        if cgroup is not None:
            with contextlib.suppress(Exception):
                cgroup.close()
        out.settled = 1
        _in_flight.pop(id(out), None)

    def __del__(self) -> None:
        # only if abort() itself was cut short, or never reached
        out = getattr(self, "out", None)
        if out is not None and not out.settled:
            self.abort()


def _sweep_flights() -> None:
    """Abort the spawns whose guard was dropped without settling (see _in_flight)."""
    for key, (ref, p, out, pid, slot) in list(_in_flight.items()):
        if ref() is None:
            if not out.settled and pid == os.getpid():
                lib.nscg_spawn_abort(p.plan, out)
                if out.err_closed:
                    slot[_Fds.ERR_W] = -1
                for i in range(_Fds.N):
                    lib.nscg_close(slot + i)
                out.settled = 1
            _in_flight.pop(key, None)


#: the exception a signal handler raised during a C wait, for the waiting thread
_raised = threading.local()


def _keep_raised(exc_type: Any, exc: BaseException | None, tb: Any) -> None:
    _raised.exc = exc


@ffi.def_extern(error=1, onerror=_keep_raised)
def nscg_signal_raised() -> int:
    """Run Python's signal handlers (at this call) for a C wait; 1 if one raised.

    Called by the C spawn when a wait returned EINTR. CPython runs pending
    handlers when a Python function starts, so a handler's exception is
    raised here, kept by ``_keep_raised``, and the C call aborts the spawn.
    """
    return 0


class ParentHook(Protocol):
    """Something the parent sets up for a sandbox while its first child waits.

    ``attach(pid)`` runs after the id maps are written and before the child is
    let go (the child is in its new namespaces, e.g. its network namespace is
    ``/proc/PID/ns/net``); it returns a callable that undoes the setup, called
    once the sandbox has been reaped, or at once if the spawn fails.
    """

    def attach(self, pid: int) -> Callable[[], None]:
        """Set up for the child ``pid``; return the undo callable."""
        ...


def _parent_hooks(c: Container) -> list[ParentHook]:
    hooks: list[ParentHook] = []
    if c.network is not None:
        hooks.append(c.network)
    return hooks


def _run_cleanups(cleanups: list[Callable[[], None]]) -> None:
    for fn in reversed(cleanups):
        with contextlib.suppress(Exception):
            fn()
    cleanups.clear()


def _child_exited(pidfd: int) -> bool:
    """Whether the child has exited (waits a little: it is on its way out)."""
    import select

    return bool(select.select([pidfd], [], [], 1.0)[0])


def _abandoned_pending() -> bool:
    return bool(_process_mod._abandoned)


def _decode_record(rec: Any) -> tuple[int, int, int, int, bytes]:
    """(abi, stage, errno, op index, syscall name) of a ``struct nscg_child_error``."""
    return int(rec.abi), int(rec.stage), int(rec.err), int(rec.index), ffi.string(rec.syscall)


def _record_of(out: Any) -> tuple[int, int, int, int, bytes] | None:
    """The child's record the C wait read (err_r), or None at EOF (it exec'd)."""
    if out.rec_len != _REC_SIZE:
        return None
    return _decode_record(out.child_err)


def _read_record(fd: int, buf: bytes = b"") -> tuple[int, int, int, int, bytes] | None:
    """Read one child record (after ``buf``, read already), or None at EOF (execve succeeded)."""
    while len(buf) < _REC_SIZE:
        try:
            chunk = os.read(fd, _REC_SIZE - len(buf))
        except InterruptedError:
            continue
        if not chunk:
            return None
        buf += chunk
    rec = ffi.new("struct nscg_child_error *")
    ffi.memmove(rec, buf, _REC_SIZE)
    return _decode_record(rec)


def _raise_child_error(
    rec: tuple[int, int, int, int, bytes] | None, c: Container, path: str, joins: Sequence[Any]
) -> None:
    if rec is None:
        raise SpawnError(errno.ECHILD, "clone", Stage.NONE, detail="the child exited during setup")
    abi, stage_no, err, index, sc = rec
    if abi != lib.NSCG_ABI_VERSION:
        # a record of another build (a stale nscg-init or extension): its fields
        # cannot be trusted to mean what this build's do
        raise SpawnError(
            errno.EPROTO,
            "read",
            Stage.NONE,
            detail=f"the child's error record has ABI {abi}, this build {lib.NSCG_ABI_VERSION}: "
            "nscg's C parts are from different builds; reinstall nscg",
        )
    try:
        stage = Stage(stage_no)
    except ValueError:
        stage = Stage.NONE
    syscall = sc.rstrip(b"\0").decode(errors="replace")
    obj = _failure_object(stage, index, c, path, joins)
    if stage == Stage.MOUNTS and c.rootfs is not None:
        from nscg._rootfs_run import failure_label

        index = failure_label(c, stage, index)[0]
    raise SpawnError(err, syscall, stage, index, obj, detail=_hint(stage, err))


def _hint(stage: Stage, err: int) -> str:
    if stage == Stage.SETNS and err == errno.EPERM:
        return (
            "joining a namespace needs CAP_SYS_ADMIN in its owner user namespace; "
            "join the user namespace too"
        )
    if stage == Stage.EXEC and err == errno.ENOENT:
        return "the program or its interpreter (#! line) or a shared library loader is missing"
    if stage == Stage.TIMENS and err == errno.EACCES:
        return "time namespace offsets must be written before any process enters it"
    if stage == Stage.PIVOT_ROOT and err == errno.EINVAL:
        return "the new root must be a mount point and its parent mount not shared"
    if stage == Stage.MOUNTS and err == errno.ENODEV:
        return "the kernel does not know this filesystem type (see /proc/filesystems)"
    if stage == Stage.MOUNTS and err == errno.EROFS:
        return (
            "the mount point is missing on a read-only mount: create it beforehand (below "
            "a read-only bind, RootFS.make_dests does unless turned off)"
        )
    if stage == Stage.MOUNTS and err == errno.ENOENT:
        return "the source or the mount point does not exist"
    return ""


def run(
    c: Container,
    argv: Sequence[str],
    *,
    input: str | bytes | bytearray | memoryview | None = None,
    capture_output: bool = False,
    stdin: StdioSpec = None,
    stdout: StdioSpec = None,
    stderr: StdioSpec = None,
    timeout: float | None = None,
    check: bool = False,
    pass_fds: Sequence[int] = (),
    executable: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    text: bool | None = None,
    encoding: str | None = None,
    errors: str | None = None,
    universal_newlines: bool | None = None,
) -> Result[str | bytes | None]:
    """Run ``argv`` to completion (see :meth:`Container.run`)."""
    codec = text_codec(text, encoding, errors, universal_newlines)
    data = checked_input(input, codec)  # (before anything runs)
    if data is not None:
        if stdin is not None:
            raise SpecError("stdin and input cannot both be given")
        stdin = PIPE
    if capture_output:
        if stdout is not None or stderr is not None:
            raise SpecError("capture_output cannot be combined with stdout or stderr")
        stdout = stderr = PIPE
    if timeout is not None and not timeout >= 0:  # NaN too
        raise SpecError(f"timeout must be a non-negative number of seconds, got {timeout!r}")
    proc = spawn(
        c,
        argv,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        pass_fds=pass_fds,
        executable=executable,
        env=env,
        cwd=cwd,
        encoding=codec[0] if codec is not None else None,
        errors=codec[1] if codec is not None else None,
        _kill_if_dropped=True,  # (dropped: an exception before the with)
    )
    with proc:
        try:
            raw = proc._communicate(data, timeout)
        except TimeoutExpired as e:
            proc.kill()
            try:
                out, err = proc._communicate(None, 2.0)
            except TimeoutExpired as e2:
                out, err = e2.output, e2.stderr
            # (decoded as subprocess.run does, unless cut inside a character)
            text_out = proc._decoded_if_possible(out, err)
            raise TimeoutExpired(list(proc.args), e.timeout, *text_out) from None
        except BaseException:
            proc.kill()
            raise
        result = proc._result(*proc._decode(*raw))
    if check:
        result.check_returncode()
    return result
