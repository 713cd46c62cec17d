"""OCI runtime-spec bundles (``config.json``, spec 1.0.x-1.2.x) to and from nscg specs.

:func:`load` reads a bundle into a :class:`Bundle`: a :class:`nscg.Container`
plus what the container's lifecycle needs and the Container has no field for
(the process's arguments, umask and OOM score, the namespaces to join by path,
the annotations). :func:`to_config` writes a Container (or a Bundle) back as
a ``config.json`` document.

The reading fails closed: a field nscg cannot honour raises
:class:`~nscg.oci.OciUnsupportedError`, an invalid value
:class:`~nscg.oci.OciSpecError`, both naming the JSON path
(``process.rlimits[2].hard``). Fields the spec leaves to the runtime and
that change no isolation property (mount atime options, ``cgroupsPath``)
are accepted and listed in :attr:`Bundle.ignored`. Unknown fields are
ignored, as the spec says. docs/oci.md has the table, field by field.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final, TypeVar

import attrs

from nscg.capabilities import Capabilities, Capability
from nscg.cgroups import CpuMax, HugetlbLimit, Limits
from nscg.container import Container, Rlimit, rlimit_name
from nscg.errors import SpecError, UnsupportedError
from nscg.namespaces import IdMap, Namespace, NamespaceRef, TimeOffsets, root_range
from nscg.oci.errors import OciSpecError, OciUnsupportedError
from nscg.rootfs import (
    Bind,
    Dev,
    Mask,
    Mount,
    Mqueue,
    Op,
    Proc,
    ReadOnly,
    RootFS,
    Tmpfs,
)
from nscg.seccomp import Action, ActionKind, Arch, CmpOp, Seccomp

__all__ = ["SPEC_VERSION", "Bundle", "DEFAULT_DEVICES", "load", "loads", "to_config"]

#: The runtime-spec version :func:`to_config` writes.
SPEC_VERSION: Final = "1.2.0"
#: The device files a container gets when its spec mounts no /dev (runtime-spec "Default
#: Devices"; /dev/ptmx comes with a devpts mount).
DEFAULT_DEVICES: Final = (
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
)
_U64_MAX: Final = 2**64 - 1
_VERSION_RE: Final = re.compile(r"1\.([0-2])\.\d+(?:[-+].*)?")
_NS_TYPES: Final = {
    "pid": Namespace.PID,
    "network": Namespace.NET,
    "mount": Namespace.MOUNT,
    "ipc": Namespace.IPC,
    "uts": Namespace.UTS,
    "user": Namespace.USER,
    "cgroup": Namespace.CGROUP,
    "time": Namespace.TIME,
}
_NS_NAMES: Final = {v: k for k, v in _NS_TYPES.items()}
#: mount options that set or clear a flag of nscg's mount ops
_FLAG_OPTS: Final = {
    "ro": ("readonly", True),
    "rw": ("readonly", False),
    "nosuid": ("nosuid", True),
    "suid": ("nosuid", False),
    "nodev": ("nodev", True),
    "dev": ("nodev", False),
    "noexec": ("noexec", True),
    "exec": ("noexec", False),
}
#: propagation options nscg's tree satisfies: every mount of the sandbox is private
#: (or a slave of the host's, with rootfsPropagation "slave"): nothing propagates out
_PROP_OK: Final = frozenset({"private", "rprivate", "slave", "rslave"})
_PROP_NO: Final = frozenset({"shared", "rshared", "unbindable", "runbindable"})
#: access-time options: not an isolation property; nscg mounts with the kernel's relatime
_ATIME: Final = frozenset(
    {
        "atime",
        "noatime",
        "relatime",
        "norelatime",
        "strictatime",
        "nostrictatime",
        "diratime",
        "nodiratime",
        "lazytime",
        "nolazytime",
    }
)
_NOOP_OPTS: Final = frozenset({"defaults", "async", "silent", "loud", "newinstance"})
_UNSUPPORTED_OPTS: Final = frozenset(
    {
        "sync",
        "dirsync",
        "mand",
        "nomand",
        "remount",
        "idmap",
        "ridmap",
        "tmpcopyup",
        "nosymfollow",
        "symfollow",
        "rro",
        "rrw",
        "rnosuid",
        "rnodev",
        "rnoexec",
    }
)


# ------------------------------------------------------------------ the result
def _strtuple(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


def _pairs(value: Iterable[tuple[str, str]] | Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    items = value.items() if isinstance(value, Mapping) else value
    return tuple((str(k), str(v)) for k, v in items)


@attrs.frozen
class Bundle:
    """A bundle's ``config.json`` as nscg runs it: a Container and the rest.

    A pure value (no fds): the namespaces to join are paths, opened by
    :meth:`open_joins` when the container is started.

    Attributes:
        container: the sandbox spec (namespaces, ids, root, mounts, process settings).
        args: the process's argv (``process.args``).
        bundle: the bundle directory (absolute), or "" for a document not read from one.
        root_path: the root directory (``root.path`` made absolute against the bundle).
        root_readonly: ``root.readonly``.
        oci_version: ``ociVersion``.
        umask: ``process.user.umask`` (None: the runtime's 0o022).
        oom_score_adj: ``process.oomScoreAdj`` (None: inherited).
        joins: the namespaces to join, as (kind, path) pairs, from ``linux.namespaces``.
        annotations: ``annotations``.
        cgroups_path: ``linux.cgroupsPath`` (recorded; nscg names the cgroup itself).
        ignored: (JSON path, why) of each field read but not applied because it
            changes no isolation property (atime mount options...); say it in logs.
    """

    container: Container
    args: tuple[str, ...] = attrs.field(converter=_strtuple)
    bundle: str = ""
    root_path: str = ""
    root_readonly: bool = False
    oci_version: str = SPEC_VERSION
    umask: int | None = None
    oom_score_adj: int | None = None
    joins: tuple[tuple[Namespace, str], ...] = ()
    annotations: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_pairs)
    cgroups_path: str | None = None
    ignored: tuple[tuple[str, str], ...] = ()

    def open_joins(self) -> tuple[Container, list[NamespaceRef]]:
        """Open the namespaces to join and return the container joining them.

        Returns:
            The container, and the references it holds: close them once it has
            been spawned.

        Raises:
            SyscallError: a namespace path cannot be opened.
        """
        refs: list[NamespaceRef] = []
        try:
            for kind, path in self.joins:
                refs.append(NamespaceRef.from_path(path, kind))
        except BaseException:
            for r in refs:
                r.close()
            raise
        if not refs:
            return self.container, refs
        return self.container.joining(refs), refs

    def to_config(self) -> dict[str, Any]:
        """This bundle as a ``config.json`` document (see :func:`to_config`)."""
        return to_config(self)


# ------------------------------------------------------------------ JSON access
_T = TypeVar("_T")


def _obj(value: object, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise OciSpecError(path, f"expected an object, got {_show(value)}")
    return value


def _list(value: object, path: str) -> Sequence[Any]:
    if not isinstance(value, list):
        raise OciSpecError(path, f"expected an array, got {_show(value)}")
    return value


def _str(value: object, path: str) -> str:
    if not isinstance(value, str):
        raise OciSpecError(path, f"expected a string, got {_show(value)}")
    if "\0" in value:
        raise OciSpecError(path, "a string must not contain NUL")
    return value


def _bool(value: object, path: str) -> bool:
    if not isinstance(value, bool):
        raise OciSpecError(path, f"expected a boolean, got {_show(value)}")
    return value


def _int(value: object, path: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise OciSpecError(path, f"expected an integer, got {_show(value)}")
    if not lo <= value <= hi:
        raise OciSpecError(path, f"{value} is out of range [{lo}, {hi}]")
    return value


def _show(value: object) -> str:
    text = json.dumps(value) if isinstance(value, (str, int, float, list, dict)) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _strs(value: object, path: str) -> list[str]:
    return [_str(v, f"{path}[{i}]") for i, v in enumerate(_list(value, path))]


def _wrap(path: str, make: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    """Call ``make``; a SpecError from nscg's own checks becomes an OciSpecError at ``path``."""
    try:
        return make(*args, **kwargs)
    except OciSpecError:
        raise
    except SpecError as e:
        raise OciSpecError(path, str(e)) from None


def _unsupported(section: Mapping[str, Any], key: str, path: str, why: str) -> None:
    """Refuse ``section[key]`` when it is present and not empty."""
    value = section.get(key)
    if value not in (None, "", [], {}, 0, False):
        raise OciUnsupportedError(f"{path}.{key}" if path else key, why)


# ------------------------------------------------------------------ loading
@attrs.define
class _Reader:
    """The state of one load: the bundle directory and what was ignored."""

    bundle: str
    ignored: list[tuple[str, str]] = attrs.Factory(list)

    def ignore(self, path: str, why: str) -> None:
        self.ignored.append((path, why))

    # -- process
    def process(
        self, proc: Mapping[str, Any], c: Container, rootless: bool
    ) -> tuple[Container, tuple[str, ...], int | None, int | None]:
        p = "process"
        if proc.get("terminal") is True:
            raise OciUnsupportedError(
                "process.terminal", "a terminal (pty and --console-socket) is not supported yet"
            )
        for key, why in (
            ("apparmorProfile", "AppArmor profiles are not supported"),
            ("selinuxLabel", "SELinux labels are not supported"),
            ("ioPriority", "I/O priorities are not supported yet"),
            ("scheduler", "scheduling policies are not supported yet"),
            ("execCPUAffinity", "CPU affinity is not supported yet"),
        ):
            _unsupported(proc, key, p, why)
        args = tuple(_strs(proc.get("args"), f"{p}.args"))
        if not args:
            raise OciSpecError(f"{p}.args", "the process needs at least one argument")
        env: list[tuple[str, str]] = []
        for i, item in enumerate(_strs(proc.get("env", []), f"{p}.env")):
            name, eq, value = item.partition("=")
            if not eq or not name:
                raise OciSpecError(f"{p}.env[{i}]", f"expected NAME=value, got {_show(item)}")
            env.append((name, value))
        cwd = _str(proc.get("cwd"), f"{p}.cwd")
        if not cwd.startswith("/"):
            raise OciSpecError(f"{p}.cwd", f"must be an absolute path, got {_show(cwd)}")
        user = _obj(proc.get("user", {}), f"{p}.user")
        uid = _int(user.get("uid", 0), f"{p}.user.uid", 0, 2**32 - 2)
        gid = _int(user.get("gid", 0), f"{p}.user.gid", 0, 2**32 - 2)
        extra = user.get("additionalGids")
        groups: tuple[int, ...] | None
        if extra:
            groups = tuple(
                _int(g, f"{p}.user.additionalGids[{i}]", 0, 2**32 - 2)
                for i, g in enumerate(_list(extra, f"{p}.user.additionalGids"))
            )
        else:
            # runc clears the supplementary groups, except where setgroups is denied
            groups = None if rootless else ()
        umask = None
        if user.get("umask") is not None:
            umask = _int(user["umask"], f"{p}.user.umask", 0, 0o777)
        rlimits = []
        for i, item in enumerate(_list(proc.get("rlimits", []), f"{p}.rlimits")):
            q = f"{p}.rlimits[{i}]"
            lim = _obj(item, q)
            kind = _str(lim.get("type"), f"{q}.type")
            soft = _int(lim.get("soft"), f"{q}.soft", 0, _U64_MAX)
            hard = _int(lim.get("hard"), f"{q}.hard", 0, _U64_MAX)
            if soft > hard:
                raise OciSpecError(f"{q}.soft", f"{soft} is above the hard limit {hard}")
            rlimits.append(
                _wrap(
                    f"{q}.type",
                    Rlimit.of,
                    kind,
                    None if soft == _U64_MAX else soft,
                    None if hard == _U64_MAX else hard,
                )
            )
        caps = self.capabilities(proc.get("capabilities"))
        nnp = _bool(proc.get("noNewPrivileges", False), f"{p}.noNewPrivileges")
        oom = None
        if proc.get("oomScoreAdj") is not None:
            oom = _int(proc["oomScoreAdj"], f"{p}.oomScoreAdj", -1000, 1000)
        if "consoleSize" in proc:
            self.ignore(f"{p}.consoleSize", "only used with a terminal")
        c = attrs.evolve(
            c,
            env=tuple(env),
            cwd=cwd,
            user=uid,
            group=gid,
            groups=groups,
            rlimits=tuple(rlimits),
            capabilities=caps,
            no_new_privs=nnp,
        )
        return c, args, umask, oom

    def capabilities(self, value: object) -> Capabilities:
        if value is None:
            return Capabilities.none()
        p = "process.capabilities"
        caps = _obj(value, p)
        sets: dict[str, frozenset[Capability]] = {}
        for key in ("bounding", "permitted", "effective", "inheritable", "ambient"):
            names = _strs(caps.get(key, []), f"{p}.{key}")
            sets[key] = frozenset(
                _wrap(f"{p}.{key}[{i}]", Capability.parse, n) for i, n in enumerate(names)
            )
        # the kernel raises an ambient capability only if it is permitted and inheritable;
        # runc skips the others (its default spec lists ambient ones without inheritable)
        usable = sets["permitted"] & sets["inheritable"]
        for i, n in enumerate(names := _strs(caps.get("ambient", []), f"{p}.ambient")):
            if Capability.parse(n) not in usable:
                self.ignore(f"{p}.ambient[{i}]", "not permitted and inheritable: not raised")
        del names
        sets["ambient"] &= usable
        return _wrap(p, lambda: Capabilities(**sets))

    # -- root and mounts
    def root(self, value: object) -> tuple[str, bool]:
        root = _obj(value, "root")
        path = _str(root.get("path"), "root.path")
        if not path:
            raise OciSpecError("root.path", "must not be empty")
        full = os.path.normpath(os.path.join(self.bundle, path))
        if not os.path.isdir(full):
            raise OciSpecError("root.path", f"{full!r} is not a directory")
        return full, _bool(root.get("readonly", False), "root.readonly")

    def mounts(self, value: object) -> tuple[list[Op], bool]:
        """The mount ops, and whether the spec mounts something at /dev."""
        ops: list[Op] = []
        has_dev = False
        for i, item in enumerate(_list(value, "mounts")):
            op = self.mount(_obj(item, f"mounts[{i}]"), f"mounts[{i}]")
            has_dev = has_dev or op.dest == "/dev"
            ops.append(op)
        return ops, has_dev

    def mount(self, m: Mapping[str, Any], p: str) -> Op:
        dest = _str(m.get("destination"), f"{p}.destination")
        if not dest.startswith("/"):
            raise OciSpecError(f"{p}.destination", f"must be absolute, got {_show(dest)}")
        fstype = _str(m.get("type", ""), f"{p}.type")
        source = _str(m.get("source", ""), f"{p}.source")
        options = _strs(m.get("options", []), f"{p}.options")
        if m.get("uidMappings") or m.get("gidMappings"):
            raise OciUnsupportedError(f"{p}.uidMappings", "idmapped mounts are not supported yet")
        flags: dict[str, bool] = {}
        data: list[tuple[str, str | None]] = []
        bind = recursive = False
        for j, opt in enumerate(options):
            q = f"{p}.options[{j}]"
            if opt in ("bind", "rbind"):
                bind = True
                recursive = recursive or opt == "rbind"
            elif opt in _FLAG_OPTS:
                key, on = _FLAG_OPTS[opt]
                flags[key] = on
            elif opt in _PROP_OK:
                pass  # nscg's mounts are private already (or slaves with rootfsPropagation)
            elif opt in _PROP_NO:
                raise OciUnsupportedError(q, f"{opt!r} propagation is not supported")
            elif opt in _ATIME:
                self.ignore(q, "access-time options are not applied (the kernel's relatime)")
            elif opt in _NOOP_OPTS:
                pass
            elif opt in _UNSUPPORTED_OPTS:
                raise OciUnsupportedError(q, f"mount option {opt!r} is not supported")
            else:
                key, eq, val = opt.partition("=")
                data.append((key, val if eq else None))
        if fstype == "bind":
            bind = True
        base = {k: flags.get(k, False) for k in ("readonly", "nosuid", "nodev", "noexec")}
        if bind:
            if data:
                raise OciSpecError(
                    f"{p}.options", f"unknown bind mount option(s) {[k for k, _ in data]}"
                )
            if not source:
                raise OciSpecError(f"{p}.source", "a bind mount needs a source")
            src = os.path.normpath(os.path.join(self.bundle, source))
            return _wrap(p, lambda: Bind(src, dest, recursive=recursive, **base))
        simple_tmpfs = fstype == "tmpfs" and all(k in ("size", "mode") for k, _ in data)
        if simple_tmpfs and dest == "/dev":
            return Dev(dest)
        if simple_tmpfs:
            opts = dict(data)
            size = _size(opts["size"], f"{p}.options") if opts.get("size") else None
            mode = _octal(opts["mode"], f"{p}.options") if opts.get("mode") else 0o755
            return _wrap(p, lambda: Tmpfs(dest, size=size, mode=mode, **base))
        if fstype == "proc":
            self._no_data(data, p)
            if flags.get("readonly"):
                raise OciUnsupportedError(f"{p}.options", "a read-only proc is not supported")
            return _wrap(p, lambda: Proc(dest))
        if fstype == "mqueue":
            self._no_data(data, p)
            if flags.get("readonly"):
                raise OciUnsupportedError(f"{p}.options", "a read-only mqueue is not supported")
            return _wrap(p, lambda: Mqueue(dest))
        if not fstype:
            raise OciSpecError(f"{p}.type", "a mount that is not a bind needs a type")
        if fstype == "cgroup":
            # cgroup v1 hierarchies are not nscg's: the sandbox sees its cgroup v2 namespace
            self._no_data(data, p)
            fstype = "cgroup2"
        return _wrap(p, lambda: Mount(fstype, dest, source or fstype, tuple(data), **base))

    @staticmethod
    def _no_data(data: list[tuple[str, str | None]], p: str) -> None:
        if data:
            raise OciSpecError(f"{p}.options", f"unknown mount option(s) {[k for k, _ in data]}")

    # -- linux
    def namespaces(self, value: object) -> tuple[Namespace, list[tuple[Namespace, str]]]:
        new = Namespace.NONE
        joins: list[tuple[Namespace, str]] = []
        seen: set[str] = set()
        for i, item in enumerate(_list(value, "linux.namespaces")):
            p = f"linux.namespaces[{i}]"
            ns = _obj(item, p)
            kind_name = _str(ns.get("type"), f"{p}.type")
            if kind_name not in _NS_TYPES:
                raise OciSpecError(
                    f"{p}.type", f"unknown namespace type {kind_name!r}; known: {sorted(_NS_TYPES)}"
                )
            if kind_name in seen:
                raise OciSpecError(f"{p}.type", f"namespace {kind_name!r} given twice")
            seen.add(kind_name)
            kind = _NS_TYPES[kind_name]
            path = _str(ns.get("path", ""), f"{p}.path")
            if path:
                if not path.startswith("/"):
                    raise OciSpecError(f"{p}.path", f"must be absolute, got {_show(path)}")
                joins.append((kind, path))
            else:
                new |= kind
        return new, joins

    def id_maps(self, value: object, p: str) -> tuple[IdMap, ...]:
        out = []
        for i, item in enumerate(_list(value, p)):
            q = f"{p}[{i}]"
            m = _obj(item, q)
            inside = _int(m.get("containerID"), f"{q}.containerID", 0, 2**32 - 2)
            outside = _int(m.get("hostID"), f"{q}.hostID", 0, 2**32 - 2)
            size = _int(m.get("size"), f"{q}.size", 1, 2**32 - 1)
            out.append(_wrap(q, IdMap, inside, outside, size))
        return tuple(out)

    def seccomp(self, value: object, caps: Capabilities) -> Seccomp:
        p = "linux.seccomp"
        sec = _obj(value, p)
        _unsupported(sec, "listenerPath", p, "seccomp user notification is not supported yet")
        _unsupported(sec, "listenerMetadata", p, "seccomp user notification is not supported yet")
        for i, flag in enumerate(_strs(sec.get("flags", []), f"{p}.flags")):
            if flag != "SECCOMP_FILTER_FLAG_TSYNC":  # (the child has one thread: a no-op)
                raise OciUnsupportedError(
                    f"{p}.flags[{i}]", f"seccomp flag {flag} is not supported"
                )
        actions = [sec.get("defaultAction")]
        for i, entry in enumerate(_list(sec.get("syscalls", []), f"{p}.syscalls")):
            e = _obj(entry, f"{p}.syscalls[{i}]")
            actions.append(e.get("action"))
            if e.get("action") == "SCMP_ACT_NOTIFY":
                raise OciUnsupportedError(
                    f"{p}.syscalls[{i}].action", "SCMP_ACT_NOTIFY needs a listenerPath"
                )
        if sec.get("defaultAction") == "SCMP_ACT_NOTIFY":
            raise OciUnsupportedError(f"{p}.defaultAction", "SCMP_ACT_NOTIFY is not supported")
        names = [c.cap_name for c in caps.bounding]
        # (the listed architectures' calls pass the filter's checks, as with runc)
        multi = len(_strs(sec.get("architectures", []), f"{p}.architectures")) > 1
        return _wrap(p, lambda: Seccomp.from_oci(sec, capabilities=names, multiarch=multi))

    def resources(self, value: object, caps: Capabilities) -> tuple[Limits | None, bool]:
        """The cgroup v2 limits, and whether the device rules deny by default."""
        p = "linux.resources"
        res = _obj(value, p)
        deny_devices = self.devices(res.get("devices", []), caps)
        lim: dict[str, Any] = {}
        if "memory" in res:
            lim.update(self.memory(_obj(res["memory"], f"{p}.memory")))
        if "cpu" in res:
            lim.update(self.cpu(_obj(res["cpu"], f"{p}.cpu")))
        if "pids" in res:
            pids = _obj(res["pids"], f"{p}.pids")
            if pids.get("limit") is not None:
                n = _int(pids["limit"], f"{p}.pids.limit", -1, 2**63 - 1)
                lim["pids_max"] = n if n > 0 else "max"  # (runc: <= 0 is no limit)
        if "blockIO" in res:
            bio = _obj(res["blockIO"], f"{p}.blockIO")
            for key in (
                "leafWeight",
                "weightDevice",
                "throttleReadBpsDevice",
                "throttleWriteBpsDevice",
                "throttleReadIOPSDevice",
                "throttleWriteIOPSDevice",
            ):
                _unsupported(bio, key, f"{p}.blockIO", "not supported yet")
            if bio.get("weight") is not None:
                w = _int(bio["weight"], f"{p}.blockIO.weight", 10, 1000)
                lim["io_weight"] = 1 + (w - 10) * 9999 // 990  # runc's v1 -> v2 conversion
        hugetlb = []
        for i, item in enumerate(_list(res.get("hugepageLimits", []), f"{p}.hugepageLimits")):
            q = f"{p}.hugepageLimits[{i}]"
            h = _obj(item, q)
            size = _str(h.get("pageSize"), f"{q}.pageSize")
            n = _int(h.get("limit"), f"{q}.limit", 0, _U64_MAX)
            hugetlb.append(_wrap(q, HugetlbLimit, size, n))
        if hugetlb:
            lim["hugetlb"] = tuple(hugetlb)
        for key, why in (
            ("network", "the v1 net_cls/net_prio controllers do not exist in cgroup v2"),
            ("rdma", "the rdma controller is not supported"),
            ("unified", "raw cgroup v2 files are not supported yet"),
        ):
            _unsupported(res, key, p, why)
        if not lim:
            return None, deny_devices
        return _wrap(p, lambda: Limits(**lim)), deny_devices

    def memory(self, mem: Mapping[str, Any]) -> dict[str, Any]:
        p = "linux.resources.memory"
        for key, why in (
            ("kernel", "kernel memory limits are cgroup v1 only (and deprecated)"),
            ("kernelTCP", "kernel TCP memory limits are cgroup v1 only"),
            ("swappiness", "swappiness is cgroup v1 only"),
            ("disableOOMKiller", "disabling the OOM killer is cgroup v1 only"),
        ):
            _unsupported(mem, key, p, why)
        for key in ("useHierarchy", "checkBeforeUpdate"):
            if key in mem:
                self.ignore(f"{p}.{key}", "without effect in cgroup v2")
        out: dict[str, Any] = {}
        limit = None
        if mem.get("limit") is not None:
            limit = _int(mem["limit"], f"{p}.limit", -1, 2**63 - 1)
            out["memory_max"] = "max" if limit == -1 else limit
        if mem.get("reservation") is not None:
            r = _int(mem["reservation"], f"{p}.reservation", -1, 2**63 - 1)
            out["memory_low"] = "max" if r == -1 else r
        if mem.get("swap") is not None:
            swap = _int(mem["swap"], f"{p}.swap", -1, 2**63 - 1)
            # v1's swap is memory + swap; v2's memory.swap.max is swap alone (runc converts)
            if swap == -1:
                out["memory_swap_max"] = "max"
            elif limit is None or limit == -1:
                raise OciSpecError(
                    f"{p}.swap", "a swap limit needs a memory limit (v1's swap is memory + swap)"
                )
            elif swap < limit:
                raise OciSpecError(
                    f"{p}.swap", f"{swap} is below the memory limit {limit} (it includes it)"
                )
            else:
                out["memory_swap_max"] = swap - limit
        return out

    def cpu(self, cpu: Mapping[str, Any]) -> dict[str, Any]:
        p = "linux.resources.cpu"
        for key, why in (
            ("realtimeRuntime", "real-time CPU limits are cgroup v1 only"),
            ("realtimePeriod", "real-time CPU limits are cgroup v1 only"),
            ("idle", "cpu.idle is not supported yet"),
            ("burst", "cpu.max.burst is not supported yet"),
        ):
            _unsupported(cpu, key, p, why)
        out: dict[str, Any] = {}
        if cpu.get("shares"):
            shares = _int(cpu["shares"], f"{p}.shares", 2, 262144)
            out["cpu_weight"] = 1 + ((shares - 2) * 9999) // 262142  # runc's conversion
        quota = cpu.get("quota")
        if quota is not None or cpu.get("period") is not None:
            period = _int(cpu.get("period") or 100_000, f"{p}.period", 1000, 1_000_000)
            q = None
            if quota is not None:
                q = _int(quota, f"{p}.quota", -1, 2**63 - 1)
            out["cpu_max"] = _wrap(
                f"{p}.quota", lambda: CpuMax(None if q in (None, -1, 0) else q, period)
            )
        if cpu.get("cpus"):
            out["cpuset_cpus"] = _str(cpu["cpus"], f"{p}.cpus")
        if cpu.get("mems"):
            out["cpuset_mems"] = _str(cpu["mems"], f"{p}.mems")
        return out

    def devices(self, value: object, caps: Capabilities) -> bool:
        """Check ``linux.resources.devices``; True when its first rule denies every device.

        nscg has no device cgroup. What it enforces instead: with a deny-all
        rule, the root is mounted nodev (the /dev nscg builds has only the
        default devices) and the process must not be able to make device
        nodes (no CAP_MKNOD).
        """
        p = "linux.resources.devices"
        rules = [_obj(r, f"{p}[{i}]") for i, r in enumerate(_list(value, p))]
        if not rules:
            return False
        first = rules[0]
        deny_all = (
            first.get("allow") is False
            and first.get("type", "a") == "a"
            and first.get("major") in (None, -1)
            and first.get("minor") in (None, -1)
            and set(str(first.get("access", "rwm"))) >= set("rwm")
        )
        if not deny_all or any(r.get("allow") is not True for r in rules[1:]):
            raise OciUnsupportedError(
                p, "device rules other than 'deny all, then allow' need a device cgroup"
            )
        if Capability.MKNOD in caps.bounding:
            raise OciUnsupportedError(
                p,
                "nscg has no device cgroup: denying devices needs CAP_MKNOD out of the "
                "bounding set (process.capabilities.bounding)",
            )
        return True


def _size(text: str | None, path: str) -> int:
    m = re.fullmatch(r"([0-9]+)([kKmMgG]?)", text or "")
    if not m:
        raise OciSpecError(path, f"tmpfs size must be bytes with k/m/g, got {text!r}")
    scale: int = 1024 ** " kmg".index(m[2].lower() or " ")
    return int(m[1]) * scale


def _octal(text: str | None, path: str) -> int:
    if not text or not re.fullmatch(r"[0-7]{1,4}", text):
        raise OciSpecError(path, f"mode must be octal (e.g. 755), got {text!r}")
    return int(text, 8)


def loads(
    config: Mapping[str, Any] | str | bytes, bundle: str = "", *, rootless: bool | None = None
) -> Bundle:
    """Read a ``config.json`` document (parsed, or its text).

    Args:
        config: the document.
        bundle: the directory relative paths (``root.path``, bind sources) are
            resolved against ("": the current directory).
        rootless: whether the caller is unprivileged (None: ``os.geteuid() != 0``).

    Returns:
        The bundle, its container checked by :meth:`nscg.Container.validate`.

    Raises:
        OciSpecError: an invalid value (its ``path`` names the field).
        OciUnsupportedError: a field nscg cannot honour (its ``path`` names it).
    """
    if isinstance(config, (str, bytes)):
        try:
            config = json.loads(config)
        except ValueError as e:
            raise OciSpecError("", f"config.json is not JSON: {e}") from None
    doc = _obj(config, "(document)")
    if rootless is None:
        rootless = os.geteuid() != 0
    r = _Reader(os.path.abspath(bundle or "."))
    version = _str(doc.get("ociVersion"), "ociVersion")
    if not _VERSION_RE.fullmatch(version):
        raise OciUnsupportedError(
            "ociVersion", f"runtime-spec {version!r}: nscg reads 1.0.x to 1.2.x"
        )
    if "hooks" in doc and any(_obj(doc["hooks"], "hooks").values()):
        raise OciUnsupportedError("hooks", "hooks are not supported yet")
    linux = _obj(doc.get("linux", {}), "linux")
    for key, why in (
        ("sysctl", "nscg has no sysctl support yet"),
        ("devices", "creating device nodes is not supported yet"),
        ("mountLabel", "SELinux labels are not supported"),
        ("intelRdt", "Intel RDT is not supported"),
        ("memoryPolicy", "NUMA memory policies are not supported yet"),
        ("netDevices", "moving network devices in is not supported yet"),
    ):
        _unsupported(linux, key, "linux", why)
    c = Container(init=False)
    if "hostname" in doc:
        c = _wrap("hostname", lambda: c.with_hostname(_str(doc["hostname"], "hostname") or None))
    if "domainname" in doc:
        c = _wrap(
            "domainname",
            lambda: c.with_domainname(_str(doc["domainname"], "domainname") or None),
        )
    if "process" not in doc:
        raise OciSpecError("process", "required to run a container")
    c, args, umask, oom = r.process(_obj(doc["process"], "process"), c, rootless)
    caps = c.capabilities if isinstance(c.capabilities, Capabilities) else Capabilities.none()
    root_path, root_ro = r.root(doc.get("root"))
    new, joins = r.namespaces(linux.get("namespaces", []))
    c = attrs.evolve(c, namespaces=new)
    if linux.get("uidMappings") or linux.get("gidMappings"):
        c = attrs.evolve(
            c,
            uid_map=r.id_maps(linux.get("uidMappings", []), "linux.uidMappings"),
            gid_map=r.id_maps(linux.get("gidMappings", []), "linux.gidMappings"),
        )
    elif new & Namespace.USER:
        raise OciSpecError(
            "linux.uidMappings", "a new user namespace needs uidMappings and gidMappings"
        )
    if linux.get("timeOffsets"):
        c = attrs.evolve(c, time_offsets=_time_offsets(linux["timeOffsets"]))
    if linux.get("personality"):
        pers = _obj(linux["personality"], "linux.personality")
        if pers.get("domain") != "LINUX" or pers.get("flags"):
            raise OciUnsupportedError(
                "linux.personality", "only the LINUX domain without flags is supported"
            )
    deny_devices = False
    if "resources" in linux:
        limits, deny_devices = r.resources(linux["resources"], caps)
        if limits is not None:
            c = c.with_cgroup(limits)
    if linux.get("cgroupsPath"):
        r.ignore("linux.cgroupsPath", "nscg names the container's cgroup itself")
    if "seccomp" in linux:
        c = attrs.evolve(c, seccomp=r.seccomp(linux["seccomp"], caps))
    else:
        c = attrs.evolve(c, seccomp="unconfined")
    c = attrs.evolve(c, rootfs=_rootfs(r, doc, linux, root_path, root_ro, deny_devices))
    _wrap("", c.validate)
    ann = {
        _str(k, "annotations"): _str(v, f"annotations.{k}")
        for k, v in _obj(doc.get("annotations", {}), "annotations").items()
    }
    return Bundle(
        c,
        args,
        bundle=r.bundle if bundle else "",
        root_path=root_path,
        root_readonly=root_ro,
        oci_version=version,
        umask=umask,
        oom_score_adj=oom,
        joins=tuple(joins),
        annotations=ann,
        cgroups_path=linux.get("cgroupsPath") or None,
        ignored=tuple(r.ignored),
    )


def _rootfs(
    r: _Reader,
    doc: Mapping[str, Any],
    linux: Mapping[str, Any],
    root_path: str,
    root_ro: bool,
    deny_devices: bool,
) -> RootFS:
    mounts, has_dev = r.mounts(doc.get("mounts", []))
    ops: list[Op] = [Bind(root_path, "/", readonly=False, recursive=True, nodev=deny_devices)]
    if not has_dev:
        ops += [Bind(d, d, readonly=False) for d in DEFAULT_DEVICES]
    ops += mounts
    ops += [Mask(d) for d in _strs(linux.get("maskedPaths", []), "linux.maskedPaths")]
    ops += [ReadOnly(d) for d in _strs(linux.get("readonlyPaths", []), "linux.readonlyPaths")]
    prop = _str(linux.get("rootfsPropagation", "private"), "linux.rootfsPropagation")
    if prop in ("shared", "rshared", "unbindable", "runbindable"):
        raise OciUnsupportedError(
            "linux.rootfsPropagation", f"{prop!r} propagation is not supported"
        )
    if prop not in ("private", "rprivate", "slave", "rslave"):
        raise OciSpecError("linux.rootfsPropagation", f"unknown propagation {prop!r}")
    return _wrap(
        "mounts",
        lambda: RootFS(ops, propagation=prop.removeprefix("r"), readonly_root=root_ro),  # type: ignore[arg-type]  # checked above: private or slave
    )


def _time_offsets(value: object) -> TimeOffsets:
    p = "linux.timeOffsets"
    offs = _obj(value, p)
    secs: dict[str, float] = {}
    for key in offs:
        if key not in ("monotonic", "boottime"):
            raise OciSpecError(f"{p}.{key}", "known clocks: monotonic, boottime")
        o = _obj(offs[key], f"{p}.{key}")
        s = _int(o.get("secs", 0), f"{p}.{key}.secs", -(2**40), 2**40)
        ns = _int(o.get("nanosecs", 0), f"{p}.{key}.nanosecs", 0, 999_999_999)
        secs[key] = s + ns / 1e9
    return _wrap(p, lambda: TimeOffsets(**secs))


def load(bundle: str | os.PathLike[str], *, rootless: bool | None = None) -> Bundle:
    """Read the bundle directory ``bundle`` (its ``config.json``).

    Args:
        bundle: the bundle directory.
        rootless: whether the caller is unprivileged (None: ``os.geteuid() != 0``).

    Returns:
        The bundle.

    Raises:
        OciSpecError: ``config.json`` is missing, not JSON, or holds an invalid value.
        OciUnsupportedError: it asks for something nscg cannot honour.
    """
    path = os.path.join(os.fspath(bundle), "config.json")
    try:
        with open(path, "rb") as f:
            text = f.read()
    except OSError as e:
        raise OciSpecError("", f"cannot read {path}: {e.strerror}") from None
    return loads(text, os.fspath(bundle), rootless=rootless)


# ------------------------------------------------------------------ writing
def _mount_json(op: Op) -> dict[str, Any]:
    def flags(o: Bind | Tmpfs | Mount) -> list[str]:
        return [
            name
            for name, on in (
                ("ro", o.readonly),
                ("nosuid", o.nosuid),
                ("nodev", o.nodev),
                ("noexec", o.noexec),
            )
            if on
        ]

    if isinstance(op, Bind):
        return {
            "destination": op.dest,
            "type": "bind",
            "source": op.source,
            "options": ["rbind" if op.recursive else "bind", *flags(op)],
        }
    if isinstance(op, Dev):
        return {
            "destination": op.dest,
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        }
    if isinstance(op, Tmpfs):
        opts = [*flags(op), f"mode={op.mode:o}"]
        if op.size is not None:
            opts.append(f"size={op.size}")
        return {"destination": op.dest, "type": "tmpfs", "source": "tmpfs", "options": opts}
    if isinstance(op, Proc):
        return {
            "destination": op.dest,
            "type": "proc",
            "source": "proc",
            "options": ["nosuid", "noexec", "nodev"],
        }
    if isinstance(op, Mqueue):
        return {
            "destination": op.dest,
            "type": "mqueue",
            "source": "mqueue",
            "options": ["nosuid", "noexec", "nodev"],
        }
    if isinstance(op, Mount):
        data = [k if v is None else f"{k}={v}" for k, v in op.options]
        return {
            "destination": op.dest,
            "type": op.fstype,
            "source": op.source or op.fstype,
            "options": [*flags(op), *data],
        }
    raise UnsupportedError(
        f"RootFS op {op!r} has no config.json form (an OCI mount list has only mounts)",
        feature="oci:mounts",
    )


def _caps_json(caps: Capabilities | str | None) -> dict[str, list[str]]:
    if caps == "inherit":
        raise UnsupportedError(
            "capabilities='inherit' has no config.json form: name the sets",
            feature="oci:process.capabilities",
        )
    c = caps if isinstance(caps, Capabilities) else Capabilities.none()
    return {
        key: sorted(x.cap_name for x in getattr(c, key))
        for key in ("bounding", "effective", "inheritable", "permitted", "ambient")
    }


def _limits_json(lim: Limits) -> dict[str, Any]:
    out: dict[str, Any] = {}
    mem: dict[str, Any] = {}
    if isinstance(lim.memory_max, int):
        mem["limit"] = lim.memory_max
        if isinstance(lim.memory_swap_max, int):
            mem["swap"] = lim.memory_max + lim.memory_swap_max
    if lim.memory_swap_max == "max":
        mem["swap"] = -1
    if isinstance(lim.memory_low, int):
        mem["reservation"] = lim.memory_low
    if mem:
        out["memory"] = mem
    cpu: dict[str, Any] = {}
    if lim.cpu_max is not None:
        cpu["period"] = lim.cpu_max.period_usec
        if lim.cpu_max.quota_usec is not None:
            cpu["quota"] = lim.cpu_max.quota_usec
    if lim.cpuset_cpus is not None:
        cpu["cpus"] = lim.cpuset_cpus
    if lim.cpuset_mems is not None:
        cpu["mems"] = lim.cpuset_mems
    if lim.cpu_weight is not None:
        raise UnsupportedError(
            "cpu_weight has no exact config.json form (cpu.shares converts lossily)",
            feature="oci:linux.resources.cpu.shares",
        )
    if cpu:
        out["cpu"] = cpu
    if lim.pids_max is not None:
        out["pids"] = {"limit": -1 if lim.pids_max == "max" else lim.pids_max}
    if lim.hugetlb:
        out["hugepageLimits"] = [
            {"pageSize": h.page_size, "limit": h.max} for h in lim.hugetlb if isinstance(h.max, int)
        ]
    unsupported = [
        n
        for n in ("memory_high", "memory_min", "memory_oom_group", "io_weight")
        if getattr(lim, n) is not None
    ]
    if lim.io:
        unsupported.append("io")
    if unsupported:
        raise UnsupportedError(
            f"limits {unsupported} have no config.json form yet", feature="oci:linux.resources"
        )
    return out


_OCI_ARCH: Final = {
    Arch.X86_64: "SCMP_ARCH_X86_64",
    Arch.I386: "SCMP_ARCH_X86",
    Arch.AARCH64: "SCMP_ARCH_AARCH64",
}


def _action_json(action: Action) -> dict[str, Any]:
    name = "SCMP_ACT_" + {"USER_NOTIF": "NOTIFY"}.get(action.kind.name, action.kind.name)
    out: dict[str, Any] = {"action": name}
    if action.kind in (ActionKind.ERRNO, ActionKind.TRACE):
        out["errnoRet"] = action.data
    elif action.data:
        raise UnsupportedError(
            f"seccomp action {action} carries data a config.json cannot say",
            feature="oci:linux.seccomp",
        )
    return out


def _seccomp_json(sec: Seccomp) -> dict[str, Any]:
    """A Seccomp as the runtime-spec's ``linux.seccomp`` (one entry per rule)."""
    if sec.unknown_action != Seccomp().unknown_action:
        raise UnsupportedError(
            "Seccomp.unknown_action has no config.json form", feature="oci:linux.seccomp"
        )
    default = _action_json(sec.default_action)
    out: dict[str, Any] = {"defaultAction": default["action"]}
    if "errnoRet" in default:
        out["defaultErrnoRet"] = default["errnoRet"]
    out["architectures"] = [_OCI_ARCH[a] for a in (sec.arches or (Arch.native(),))]
    syscalls = []
    for rule in sec.rules:
        if not isinstance(rule.syscall, str):
            raise UnsupportedError(
                f"a seccomp rule by number ({rule.syscall}) has no config.json form",
                feature="oci:linux.seccomp",
            )
        indexes = [a.index for a in rule.args]
        if len(set(indexes)) < len(indexes):
            # (a config.json entry with two comparisons of one argument means OR)
            raise UnsupportedError(
                f"seccomp rule {rule.syscall}: two comparisons of one argument (AND) have "
                "no config.json form",
                feature="oci:linux.seccomp",
            )
        entry: dict[str, Any] = {"names": [rule.syscall], **_action_json(rule.action)}
        if rule.args:
            entry["args"] = [
                {"index": a.index, "value": a.mask, "valueTwo": a.value, "op": "SCMP_CMP_MASKED_EQ"}
                if a.op is CmpOp.MASKED_EQ
                else {"index": a.index, "value": a.value, "op": f"SCMP_CMP_{a.op.name}"}
                for a in rule.args
            ]
        syscalls.append(entry)
    out["syscalls"] = syscalls
    return out


def _default_maps() -> tuple[tuple[IdMap, ...], tuple[IdMap, ...]]:
    """The maps nscg gives a new user namespace when the spec names none."""
    if os.geteuid() == 0:
        rr = root_range()
        return rr.uid_map(), rr.gid_map()
    return (IdMap(0, os.geteuid(), 1),), (IdMap(0, os.getegid(), 1),)


def to_config(spec: Bundle | Container, args: Sequence[str] = ("sh",)) -> dict[str, Any]:
    """Write a Container (or a Bundle) as a ``config.json`` document.

    The root must start with a bind of a directory at ``/`` (as
    :meth:`nscg.RootFS.from_directory` and :meth:`nscg.RootFS.host` do); its
    later mount ops become ``mounts``, its masks ``linux.maskedPaths`` and its
    read-only paths ``linux.readonlyPaths`` (applied after the mounts, as the
    runtime-spec orders them).

    Args:
        spec: what to write.
        args: the process's argv, for a Container (a Bundle has its own).

    Returns:
        The document (``json.dump`` it).

    Raises:
        UnsupportedError: the spec uses something a config.json cannot say
            (an overlay root, files made in the root, a network, namespace
            references held as fds...).
    """
    b = spec if isinstance(spec, Bundle) else Bundle(spec, args)
    c = b.container
    if c.network is not None:
        raise UnsupportedError("a Network has no config.json form", feature="oci:network")
    if c.join:
        raise UnsupportedError(
            "namespaces joined by reference have no config.json form: use a Bundle's joins",
            feature="oci:linux.namespaces",
        )
    if not isinstance(c.seccomp, Seccomp) and c.seccomp != "unconfined":
        raise UnsupportedError(
            "seccomp='default' has no config.json form here: pass Seccomp.docker_default()",
            feature="oci:linux.seccomp",
        )
    rootfs = c.rootfs
    if (
        rootfs is None
        or not rootfs.ops
        or not (isinstance(rootfs.ops[0], Bind) and rootfs.ops[0].dest == "/")
    ):
        raise UnsupportedError(
            "the root must start with a bind of a directory at / to have a config.json form",
            feature="oci:root",
        )
    first = rootfs.ops[0]
    assert isinstance(first, Bind)
    mounts: list[dict[str, Any]] = []
    masked: list[str] = []
    readonly: list[str] = []
    has_dev = any(
        op.dest == "/dev" for op in rootfs.ops[1:] if not isinstance(op, (Mask, ReadOnly))
    )
    for op in rootfs.ops[1:]:
        if isinstance(op, Mask):
            masked.append(op.dest)
        elif isinstance(op, ReadOnly):
            readonly.append(op.dest)
        elif (
            not has_dev
            and isinstance(op, Bind)
            and op.source == op.dest
            and op.dest in DEFAULT_DEVICES
        ):
            continue  # the runtime's default devices
        else:
            mounts.append(_mount_json(op))
    process: dict[str, Any] = {
        "terminal": False,
        "user": {"uid": c.user or 0, "gid": c.group or 0},
        "args": list(b.args),
        "env": [f"{k}={v}" for k, v in (c.env or ())],
        "cwd": c.cwd or "/",
        "capabilities": _caps_json(c.capabilities),
        "rlimits": [
            {
                "type": rlimit_name(lim.resource),
                "hard": lim.hard,
                "soft": lim.soft,
            }
            for lim in c.rlimits
        ],
        "noNewPrivileges": c.no_new_privs,
    }
    if c.groups:
        process["user"]["additionalGids"] = list(c.groups)
    if b.umask is not None:
        process["user"]["umask"] = b.umask
    if b.oom_score_adj is not None:
        process["oomScoreAdj"] = b.oom_score_adj
    namespaces = [{"type": _NS_NAMES[k]} for k in c.namespaces.kinds() if k in _NS_NAMES]
    namespaces += [{"type": _NS_NAMES[k], "path": p} for k, p in b.joins]
    linux: dict[str, Any] = {"namespaces": namespaces}
    if c.namespaces & Namespace.USER:
        uid_map, gid_map = (
            (c.uid_map, c.gid_map)
            if c.uid_map is not None and c.gid_map is not None
            else _default_maps()
        )
        linux["uidMappings"] = [
            {"containerID": m.inside, "hostID": m.outside, "size": m.count} for m in uid_map
        ]
        linux["gidMappings"] = [
            {"containerID": m.inside, "hostID": m.outside, "size": m.count} for m in gid_map
        ]
    if c.time_offsets is not None:
        linux["timeOffsets"] = {
            k: {"secs": int(v // 1), "nanosecs": round((v % 1) * 1e9)}
            for k, v in (
                ("monotonic", c.time_offsets.monotonic),
                ("boottime", c.time_offsets.boottime),
            )
        }
    resources: dict[str, Any] = {}
    if first.nodev:
        resources["devices"] = [{"allow": False, "access": "rwm"}]
    if c.cgroup is not None:
        resources.update(_limits_json(c.cgroup.limits))
    if resources:
        linux["resources"] = resources
    if b.cgroups_path:
        linux["cgroupsPath"] = b.cgroups_path
    if isinstance(c.seccomp, Seccomp):
        linux["seccomp"] = _seccomp_json(c.seccomp)
    if masked:
        linux["maskedPaths"] = masked
    if readonly:
        linux["readonlyPaths"] = readonly
    linux["rootfsPropagation"] = rootfs.propagation
    doc: dict[str, Any] = {
        "ociVersion": b.oci_version,
        "process": process,
        "root": {
            "path": b.root_path or first.source,
            "readonly": rootfs.readonly_root or first.readonly,
        },
        "mounts": mounts,
        "linux": linux,
    }
    if c.hostname is not None:
        doc["hostname"] = c.hostname
    if c.domainname is not None:
        doc["domainname"] = c.domainname
    if b.annotations:
        doc["annotations"] = dict(b.annotations)
    return doc
