"""The plan: a Container flattened into one ``struct nscg_plan`` (prepared once per spec)."""

from __future__ import annotations

import functools
import os
import weakref
from collections.abc import Sequence
from typing import Any

from nscg import _idmap, rootfs
from nscg._native import ffi, lib
from nscg._rootfs_run import RootfsRun
from nscg._spawn._caller import _CAP_SETGID, _CAP_SETPCAP, _cap_eff, _caps_masks
from nscg._spawn._etc import _with_etc_files
from nscg._spawn._idmaps import _map_text, _plan_maps, _root_elsewhere
from nscg._spawn._modes import Caller, choose_mode, mode_flags
from nscg._spawn._resolve import _default_env
from nscg.container import (
    DEFAULT_PATH,
    Container,
)
from nscg.errors import (
    SpecError,
    UnsupportedError,
)
from nscg.namespaces import JOIN_ORDER, Namespace, in_initial_userns
from nscg.seccomp import _policy as _seccomp_policy


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
        listing, listed = rootfs.host_socket_listing()  # (looked up per call)
        masks = root.socket_masks(listed)
    if prep is not None and prep.cap_eff == cap_eff and prep.masks == masks:
        prep.set_checks(cap_eff, listing)  # (the same plan: only the listing moved)
        return prep
    prep = _Prepared(c, key, cap_eff, masks, listing)
    _prepared[id(c)] = (weakref.ref(c, functools.partial(_forget, id(c))), prep)
    return prep
