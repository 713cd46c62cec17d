"""The ``nscg`` command line: ``run``, ``exec``, ``check``, ``features``.

``nscg run [OPTIONS] -- CMD...`` builds a :class:`nscg.Container` from
bwrap-like options (each maps to one builder call, see :data:`API_TO_CLI`;
bubblewrap's filesystem options are applied in command-line order, as bwrap
does, see :data:`ROOTFS_OPS_TO_CLI` and ``nscg._cli_bwrap``), runs the
command and exits with its status:

* the command's exit status when it exits;
* ``128 + N`` when it was killed by signal ``N``;
* ``124`` when ``--timeout`` expired (the whole sandbox is killed first);
* ``125`` when the sandbox could not be set up (nscg's own error);
* ``2`` for a bad option (one line on stderr, never a traceback).

SIGTERM, SIGHUP and SIGQUIT sent to ``nscg run`` are forwarded to the sandbox.

``--json PATH|fd:N`` writes a result document that follows
``nscg/_data/result.schema.json`` (see :func:`result_document`) to its own
file or descriptor: never to stdout, which belongs to the command.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal, NoReturn

import attrs

from nscg import _cli_bwrap as bw
from nscg._cli_bwrap import UsageError
from nscg.images import cli as images_cli

if TYPE_CHECKING:
    from nscg.container import Container
    from nscg.process import Process, Result

#: exit status of ``nscg run`` when ``--timeout`` expired (as coreutils ``timeout``)
EXIT_TIMEOUT: Final = 124
#: exit status when nscg itself failed (spec, spawn or host error)
EXIT_NSCG_ERROR: Final = 125
#: exit status for bad command-line options
EXIT_USAGE: Final = 2

#: Every builder of :class:`nscg.Container` and every field of
#: :class:`nscg.cgroups.Limits`, with its CLI counterpart (a ``run`` option, or
#: the ``exec`` command). ``None`` means API-only; the reason is in :data:`API_ONLY`.
API_TO_CLI: Final[dict[str, tuple[str, ...] | None]] = {
    "Container.with_namespaces": ("--unshare",),
    "Container.without_namespaces": ("--share", "--share-net"),
    "Container.with_uid_map": ("--uid-map",),
    "Container.with_gid_map": ("--gid-map",),
    "Container.with_hostname": ("--hostname",),
    "Container.with_domainname": ("--domainname",),
    "Container.with_time_offsets": ("--time-offset",),
    "Container.with_env": ("--env", "--inherit-env", "--setenv", "--unsetenv", "--clearenv"),
    "Container.with_cwd": ("--cwd", "--chdir"),
    "Container.with_user": ("--uid", "--gid", "--groups"),
    "Container.with_rlimit": ("--rlimit",),
    "Container.with_capabilities": ("--caps", "--cap-add", "--cap-drop"),
    "Container.with_seccomp": ("--seccomp",),
    "Container.with_cgroup": ("--cgroup", "--cgroup-parent"),
    "Container.with_limits": ("--memory", "--cpus", "--pids", "--limit"),
    "Container.with_rootfs": (
        "--root",
        *(f"--{name}" for name in bw.FS_OPTIONS),
        "--perms",
        "--size",
        "--keep-upper",
        "--bind-socket",
        "--show-home",
        "--tmp-size",
        "--shm-size",
        "--upper-size",
    ),
    "Container.without_rootfs": ("--root",),
    "Container.with_command": None,
    "Container.with_network": ("--network", "--share-net"),
    "Container.with_init": ("--no-init",),
    "Container.with_no_new_privs": ("--new-privs",),
    "Container.with_die_with_parent": ("--no-die-with-parent",),
    "Container.with_new_session": ("--no-new-session",),
    "Container.joining": ("--join", "--userns", "--pidns", "--netns"),
    "Container.entering": ("exec --pid",),
    "Limits.memory_max": ("--memory",),
    "Limits.memory_high": ("--limit",),
    "Limits.memory_low": ("--limit",),
    "Limits.memory_min": ("--limit",),
    "Limits.memory_swap_max": ("--limit",),
    "Limits.memory_oom_group": ("--limit",),
    "Limits.cpu_max": ("--cpus",),
    "Limits.cpu_weight": ("--limit",),
    "Limits.cpuset_cpus": ("--limit",),
    "Limits.cpuset_mems": ("--limit",),
    "Limits.pids_max": ("--pids",),
    "Limits.io": None,
    "Limits.io_weight": ("--limit",),
    "Limits.hugetlb": None,
}

#: Every operation of a :class:`nscg.rootfs.RootFS` plan with the ``run``
#: options that make one (in command-line order, with the root's own first).
#: ``None``: API-only, the reason in :data:`API_ONLY`.
ROOTFS_OPS_TO_CLI: Final[dict[str, tuple[str, ...] | None]] = {
    "Bind": (
        "--root", "--bind", "--bind-try", "--dev-bind", "--dev-bind-try", "--ro-bind",
        "--ro-bind-try", "--bind-fd", "--ro-bind-fd", "--bind-socket",
    ),
    "Tmpfs": ("--tmpfs", "--tmp-size"),
    "Proc": ("--proc",),
    "Dev": ("--dev", "--shm-size"),
    "Mqueue": ("--mqueue",),
    "Mount": None,
    "Overlay": ("--root", "--keep-upper", "--upper-size"),
    "Data": ("--bind-data", "--ro-bind-data"),
    "Mkdir": ("--dir",),
    "Symlink": ("--symlink",),
    "File": ("--file",),
    "ReadOnly": ("--remount-ro",),
    "Mask": None,
    "Chmod": ("--chmod",),
}  # fmt: skip

#: Why some API options have no CLI flag.
API_ONLY: Final[dict[str, str]] = {
    "Limits.io": "per-device IoLimit values (major:minor and four rates) need Python objects",
    "Limits.hugetlb": "per-page-size HugetlbLimit values need Python objects",
    "Container.with_command": "the command is CMD after --; --image takes the image's",
    "Mount": "any filesystem type with fsconfig options: bwrap has no such option either",
    "Mask": "the default roots mask Docker's paths and the host's sockets (--bind-socket "
    "shows one); bwrap has no such option",
}

#: ``--limit NAME=VALUE`` names that take an integer / a boolean
_INT_LIMITS: Final = frozenset({"cpu_weight", "io_weight"})
_BOOL_LIMITS: Final = frozenset({"memory_oom_group"})
_STR_LIMITS: Final = frozenset(
    {
        "memory_high",
        "memory_low",
        "memory_min",
        "memory_swap_max",
        "cpuset_cpus",
        "cpuset_mems",
        "memory_max",
        "cpu_max",
        "pids_max",
    }
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"nscg: {message}\n")


def _add_process_options(p: argparse.ArgumentParser) -> None:
    """Options that apply to the payload itself (``run`` and ``exec``)."""
    g = p.add_argument_group("process")
    g.add_argument("--uid", type=int, help="uid inside the sandbox (default: 0)")
    g.add_argument("--gid", type=int, help="gid inside the sandbox (default: the uid)")
    g.add_argument("--groups", metavar="GID,...", help="supplementary gids inside")
    g.add_argument("--cwd", "--chdir", dest="cwd", metavar="DIR", help="working directory inside")
    bw.add_env_options(g)
    g.add_argument("--inherit-env", action="store_true", help="start from nscg's own environment")
    g.add_argument(
        "--rlimit", action="append", default=[], metavar="RES=SOFT[:HARD]",
        help="resource limit, e.g. nofile=256 or core=0:0 (repeatable)",
    )  # fmt: skip
    g.add_argument(
        "--caps", choices=("none", "docker", "all", "inherit"), default="none",
        help="base capability set (default: none)",
    )  # fmt: skip
    g.add_argument(
        "--cap-add", action="append", default=[], metavar="CAP", help="keep CAP (repeatable)"
    )
    g.add_argument(
        "--cap-drop", action="append", default=[], metavar="CAP", help="drop CAP (repeatable)"
    )
    g.add_argument(
        "--seccomp", default="default", metavar="default|unconfined|FILE.json",
        help="system call filter (default: Docker's default profile)",
    )  # fmt: skip
    g.add_argument(
        "--new-privs", action="store_true",
        help="do not set no_new_privs (needs --seccomp unconfined or CAP_SYS_ADMIN)",
    )  # fmt: skip
    g.add_argument("--no-new-session", action="store_true", help="keep the controlling terminal")
    g.add_argument("--no-die-with-parent", action="store_true", help="let the sandbox outlive nscg")
    g.add_argument("--timeout", type=float, metavar="SECONDS", help="kill it after SECONDS")
    g.add_argument(
        "--json", metavar="PATH|fd:N",
        help="write the result as JSON (result.schema.json) to PATH or fd N, e.g. "
        "--json fd:3 3>result.json (not stdout: that is the command's)",
    )  # fmt: skip
    g.add_argument("--pid-file", metavar="PATH", help="write the sandbox's pid (for nscg exec)")
    bw.add_fd_options(g)


def _parser() -> argparse.ArgumentParser:
    import nscg

    p = _Parser(prog="nscg", description="Run commands in Linux sandboxes.")
    p.add_argument("--version", action="version", version=f"nscg {nscg.__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    r = sub.add_parser(
        "run",
        help="run a command in a new sandbox",
        description="Run CMD in a new sandbox: new user, pid, mount, net, uts, ipc and "
        "cgroup namespaces, the host's root read-only, no capabilities, Docker's seccomp "
        "profile. Exit status: the command's, 128+N for signal N, 124 on timeout, 125 "
        "when nscg failed, 2 for bad options.",
    )
    fs = r.add_argument_group(
        "filesystem", "applied in command-line order, after the root's own (as bwrap does)"
    )
    fs.add_argument(
        "--root", default=None, metavar="host|none|DIR|overlay[:LOWER[:UPPER]]",
        help="the root: the host's / read-only (default), none (keep the caller's view), "
        "a directory, or a copy-on-write overlay",
    )  # fmt: skip
    fs.add_argument(
        "--image", default=None, metavar="PATH[:TAG]",
        help="run an OCI layout, OCI archive or Docker archive: its layers as the root, "
        "its Env, WorkingDir, User and (without CMD) Entrypoint + Cmd (see docs/images.md)",
    )  # fmt: skip
    fs.add_argument(
        "--store", default=None, metavar="DIR", help="the image layer store (with --image)"
    )
    bw.add_fs_options(fs)
    fs.add_argument("--keep-upper", metavar="DIR", help="overlay root whose writes are kept in DIR")
    fs.add_argument(
        "--tmp-size", metavar="BYTES", help="size limit of the private /tmp (default 256M)"
    )
    fs.add_argument("--shm-size", metavar="BYTES", help="size limit of /dev/shm (default 64M)")
    fs.add_argument(
        "--upper-size", metavar="BYTES",
        help="size limit of an overlay root's scratch memory (default 1G)",
    )  # fmt: skip
    fs.add_argument(
        "--bind-socket", action="append", default=[], metavar="PATH",
        help="expose this host unix socket (or directory of sockets) at the same path; "
        "by default the sandbox reaches none (repeatable)",
    )  # fmt: skip
    fs.add_argument(
        "--show-home", action="store_true",
        help="show /home, /root and your home directory (hidden by default: keys, tokens)",
    )  # fmt: skip
    ns = r.add_argument_group("namespaces")
    ns.add_argument(
        "--unshare", metavar="KIND,...|none",
        help="create exactly these namespaces, or none; without mnt the default --root "
        "is none (the caller's view)",
    )  # fmt: skip
    ns.add_argument(
        "--share", action="append", default=[], metavar="KIND",
        help="do not create this namespace (repeatable)",
    )  # fmt: skip
    ns.add_argument(
        "--join", nargs=2, action="append", default=[], metavar=("PID", "KIND,..."),
        help="join these namespaces of PID ('all' for all)",
    )  # fmt: skip
    for opt, kind in (("userns", "user"), ("pidns", "pid"), ("netns", "network")):
        ns.add_argument(f"--{opt}", metavar="FD", help=f"join the {kind} namespace open as FD")
    ns.add_argument("--hostname", help="hostname inside (default: nscg)")
    ns.add_argument("--domainname", help="NIS domain name inside")
    ns.add_argument(
        "--uid-map", action="append", default=[], metavar="IN:OUT:COUNT", help="uid map entry"
    )
    ns.add_argument(
        "--gid-map", action="append", default=[], metavar="IN:OUT:COUNT", help="gid map entry"
    )
    ns.add_argument(
        "--time-offset", metavar="MONOTONIC[:BOOTTIME]",
        help="new time namespace with these clock offsets (seconds)",
    )  # fmt: skip
    ns.add_argument(
        "--network", choices=("none", "host"), default=None,
        help="none: only lo (default); host: the caller's network",
    )  # fmt: skip
    ns.add_argument("--share-net", action="store_true", help="same as --network host")
    ns.add_argument(
        "--no-init", action="store_true", help="make the command pid 1 itself (no reaper)"
    )
    cg = r.add_argument_group("cgroup (needs a cgroup v2 host)")
    cg.add_argument("--memory", metavar="BYTES", help="memory.max, e.g. 256M")
    cg.add_argument("--cpus", type=float, metavar="N", help="cpu.max as a number of CPUs")
    cg.add_argument("--pids", metavar="N", help="pids.max")
    cg.add_argument(
        "--limit", action="append", default=[], metavar="NAME=VALUE",
        help="any other Limits field, e.g. memory_high=200M, cpu_weight=50",
    )  # fmt: skip
    cg.add_argument("--cgroup", action="store_true", help="a cgroup even without limits")
    cg.add_argument("--cgroup-parent", metavar="PATH", help="create the cgroup under PATH")
    _add_process_options(r)
    r.add_argument("cmd", nargs=argparse.REMAINDER, help="-- COMMAND [ARG...]")

    e = sub.add_parser(
        "exec",
        help="run a command inside a running sandbox",
        description="Join every namespace of PID (a sandbox's pid, see run --pid-file) "
        "and run CMD there.",
    )
    e.add_argument("--pid", type=int, required=True, help="a process of the sandbox")
    _add_process_options(e)
    e.add_argument("cmd", nargs=argparse.REMAINDER, help="-- COMMAND [ARG...]")

    images_cli.add_parser(sub)
    sub.add_parser("features", help="print what this host supports, as JSON")
    ch = sub.add_parser("check", help="what this host supports for sandboxes, and why not")
    ch.add_argument("--json", action="store_true", help="machine-readable output")
    return p


# ------------------------------------------------------------------ option → spec
def _kv(text: str, what: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise UsageError(f"{what} takes NAME=VALUE, got {text!r}")
    return key, value


def _id_map(text: str, what: str) -> tuple[int, int, int]:
    parts = text.split(":")
    try:
        inside, outside, count = (int(x) for x in parts)
    except ValueError:
        raise UsageError(f"{what} takes IN:OUT:COUNT, got {text!r}") from None
    return inside, outside, count


def _rootfs(args: argparse.Namespace, *, new_mount_ns: bool) -> Any:
    from nscg.rootfs import RootFS

    # the default: the host read-only, which takes a mount namespace; without one
    # (--unshare none, --share mnt) the caller's view, unless a mount option asks
    # for a root (then the spec's own error says why that cannot be)
    wants_root = bool(args.fs_ops or args.keep_upper or args.bind_socket or args.show_home)
    default = "host" if new_mount_ns or wants_root else "none"
    root: str = args.root if args.root is not None else default
    keep = args.keep_upper
    if keep is not None:
        if args.root is None:
            root = "overlay"
        elif not root.startswith("overlay"):
            raise UsageError(f"--keep-upper needs an overlay root, not --root {root}")
    if root == "none":
        if args.fs_ops or args.bind_socket or args.show_home:
            raise UsageError(
                "the filesystem options (--bind, --tmpfs, --dir...), --bind-socket and "
                "--show-home need a root (not --root none)"
            )
        return None
    hide_home = not args.show_home
    sizes = _sizes(args)
    if "upper_size" in sizes and not root.startswith("overlay"):
        raise UsageError(f"--upper-size needs an overlay root, not --root {root}")
    if "tmp_size" in sizes and root != "host":
        raise UsageError("--tmp-size needs --root host (use --tmpfs for another root)")
    if root == "host":
        fs = RootFS.host(hide_home=hide_home, **sizes)
    elif root == "overlay" or root.startswith("overlay:"):
        _, _, rest = root.partition(":")
        lower, _, upper = rest.partition(":")
        if upper and keep and upper != keep:
            raise UsageError("--keep-upper and the UPPER of --root overlay:LOWER:UPPER differ")
        up = upper or keep or None  # (a missing upper is made at spawn)
        fs = RootFS.overlay([lower or "/"], up, hide_home=None if hide_home else False, **sizes)
    else:
        if args.show_home:
            raise UsageError(
                "--show-home needs --root host or overlay (a DIR root has no host home)"
            )
        fs = RootFS.from_directory(root)
        if "shm_size" in sizes:
            raise UsageError("--shm-size needs --root host or overlay")
    fs = _add_mounts(fs, args)
    for path in args.bind_socket:
        fs = fs.bind_socket(path)
    return fs


def _add_mounts(fs: Any, args: argparse.Namespace) -> Any:
    """The filesystem options (bubblewrap's) on top of the root ``fs``, in command-line order."""
    return bw.apply_fs_ops(fs, args.fs_ops)


def _sizes(args: argparse.Namespace) -> dict[str, Any]:
    """The --tmp-size, --shm-size and --upper-size options given, as RootFS keywords."""
    from nscg.cgroups._fs import parse_size

    out: dict[str, Any] = {}
    for opt in ("tmp_size", "shm_size", "upper_size"):
        text = getattr(args, opt)
        if text is None:
            continue
        n = parse_size(text, what="--" + opt.replace("_", "-"))
        if n == "max" or n <= 0:
            raise UsageError(f"--{opt.replace('_', '-')} takes a positive size such as 64M")
        out[opt] = n
    return out


def _process_options(c: Container, args: argparse.Namespace) -> Container:
    from nscg.capabilities import Capabilities
    from nscg.seccomp import Seccomp

    if args.uid is not None or args.gid is not None or args.groups:
        groups = None
        if args.groups:
            try:
                groups = [int(g) for g in args.groups.split(",")]
            except ValueError:
                raise UsageError(f"--groups takes GID,..., got {args.groups!r}") from None
        c = c.with_user(args.uid if args.uid is not None else 0, args.gid, groups)
    if args.cwd:
        c = c.with_cwd(args.cwd)
    if args.env_ops or args.inherit_env:
        from nscg._spawn import _default_env

        default = _default_env(args.uid or 0)
        start = dict(os.environ) if args.inherit_env else default
        c = c.with_env(bw.apply_env(start, default, args.env_ops))
    for text in args.rlimit:
        res, value = _kv(text, "--rlimit")
        soft, _, hard = value.partition(":")

        def num(v: str) -> int | None:
            if v in ("unlimited", "inf", "max"):
                return None
            try:
                return int(v)
            except ValueError:
                raise UsageError(f"--rlimit: {v!r} is not a number") from None

        c = c.with_rlimit(res, num(soft), num(hard) if hard else "same")
    caps: Capabilities | Literal["inherit"] | None
    if args.caps == "inherit":
        if args.cap_add or args.cap_drop:
            raise UsageError("--cap-add/--cap-drop cannot be combined with --caps inherit")
        caps = "inherit"
    else:
        base = {
            "none": Capabilities.none,
            "docker": Capabilities.docker_default,
            "all": Capabilities.all,
        }[args.caps]()
        keep = set(base.effective)
        if args.cap_add or args.cap_drop or args.caps != "none":
            keep |= set(Capabilities.none().add(*args.cap_add).effective)
            keep -= set(Capabilities.none().add(*args.cap_drop).effective)
            ambient = bool(args.uid) and bool(keep)
            caps = Capabilities.from_keep(keep, ambient=ambient) if keep else None
        else:
            caps = None
    c = c.with_capabilities(caps)
    if args.seccomp in ("default", "unconfined"):
        c = c.with_seccomp(args.seccomp)
    else:
        if not os.path.isfile(args.seccomp):
            raise UsageError(f"--seccomp: no such profile file {args.seccomp!r}")
        kept = () if isinstance(caps, str) or caps is None else caps.effective
        c = c.with_seccomp(Seccomp.from_oci(args.seccomp, capabilities=kept))
    if args.new_privs:
        c = c.with_no_new_privs(False)
    if args.no_new_session:
        c = c.with_new_session(False)
    if args.no_die_with_parent:
        c = c.with_die_with_parent(False)
    return c


def build_container(args: argparse.Namespace) -> Container:
    """Turn parsed ``nscg run`` options into a :class:`nscg.Container`.

    Its only side effects: the fds of ``--file``, ``--bind-data`` and
    ``--ro-bind-data`` are read to their end and closed, and ``--userns``,
    ``--pidns``, ``--netns`` and ``--join`` open namespace references (the
    spec's ``join``: close them when done). A missing ``--keep-upper``
    directory is made when the sandbox starts.

    Raises:
        UsageError: an option is malformed.
        SpecError: the spec the options describe is invalid.
    """
    import nscg

    c = nscg.Container()
    if args.image:
        if args.root is not None or args.show_home or args.bind_socket or _sizes(args):
            raise UsageError(
                "--image makes the root: not with --root, --show-home, --bind-socket or "
                "the size options"
            )
        img = images_cli.open_image(args.image)
        c = nscg.Container.from_image(
            img, store=images_cli.store_of(args.store), upper=args.keep_upper
        )
        assert c.rootfs is not None
        c = c.with_rootfs(_add_mounts(c.rootfs, args))
    if args.unshare:
        kinds = args.unshare.split(",")
        c = c.with_namespaces(nscg.Namespace.NONE if kinds == ["none"] else kinds)
    for kind in args.share:
        c = c.without_namespaces(kind)
    if args.share_net and args.network == "none":
        raise UsageError("--share-net and --network none contradict each other")
    if args.share_net or args.network == "host":
        c = c.with_network(nscg.Network.host())
    elif args.network == "none":
        c = c.with_network(nscg.Network.none())
    if args.uid_map:
        c = c.with_uid_map(*(_id_map(m, "--uid-map") for m in args.uid_map))
    if args.gid_map:
        c = c.with_gid_map(*(_id_map(m, "--gid-map") for m in args.gid_map))
    if args.hostname:
        c = c.with_hostname(args.hostname)
    if args.domainname:
        c = c.with_domainname(args.domainname)
    if args.time_offset:
        mono, _, boot = args.time_offset.partition(":")
        try:
            c = c.with_time_offsets(monotonic=float(mono), boottime=float(boot or 0))
        except ValueError:
            raise UsageError(
                f"--time-offset takes SECONDS[:SECONDS], got {args.time_offset!r}"
            ) from None
    if args.no_init:
        c = c.with_init(False)
    if not args.image:
        root = _rootfs(args, new_mount_ns=bool(c.namespaces & nscg.Namespace.MOUNT))
        c = c.with_rootfs(root) if root is not None else c.without_rootfs()
    limits: dict[str, Any] = {}
    for text in args.limit:
        name, value = _kv(text, "--limit")
        if name in _INT_LIMITS:
            try:
                limits[name] = int(value)
            except ValueError:
                raise UsageError(f"--limit {name} takes an integer, got {value!r}") from None
        elif name in _BOOL_LIMITS:
            if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise UsageError(f"--limit {name} takes true or false, got {value!r}")
            limits[name] = value.lower() in ("1", "true", "yes")
        elif name in _STR_LIMITS:
            limits[name] = value
        else:
            known = sorted(_INT_LIMITS | _BOOL_LIMITS | _STR_LIMITS)
            raise UsageError(f"--limit: unknown limit {name!r}; known: {', '.join(known)}")
    if args.cgroup or args.cgroup_parent:
        c = c.with_cgroup(parent=args.cgroup_parent)
    if args.memory is not None or args.cpus is not None or args.pids is not None or limits:
        c = c.with_limits(memory=args.memory, cpus=args.cpus, pids=args.pids, **limits)
    for pid, kinds in args.join:
        try:
            target = int(pid)
        except ValueError:
            raise UsageError(f"--join takes PID KIND,..., got pid {pid!r}") from None
        with _no_such_process(f"--join {target}", target):
            c = c.joining(target, None if kinds == "all" else kinds.split(","))
    refs = bw.namespace_fds(args)
    if refs:
        c = c.joining(refs)
    return _process_options(c, args)


@contextlib.contextmanager
def _no_such_process(option: str, pid: int) -> Iterator[None]:
    """Turn a missing target process into the one usage error of ``--join`` and ``exec --pid``.

    Checked before its namespaces are opened, and again when opening them fails
    with ENOENT/ESRCH (the process exited in between): exit status 2 either way,
    like any other option naming something that does not exist.
    """
    message = f"{option}: no such process"
    if pid <= 0 or not os.path.exists(f"/proc/{pid}"):
        raise UsageError(message)
    try:
        yield
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ESRCH):
            raise UsageError(message) from None
        raise


# ------------------------------------------------------------------ result document
def result_document(
    result: Result | None,
    *,
    argv: Sequence[str],
    status: int,
    timed_out: bool = False,
    error: str | None = None,
) -> dict[str, Any]:
    """The ``--json`` document (schema: ``nscg/_data/result.schema.json``)."""
    doc: dict[str, Any] = {
        "schema": "https://nscg.invalid/result.schema.json",
        "version": 1,
        "argv": list(argv),
        "status": status,
        "exit_code": None,
        "signal": None,
        "timed_out": timed_out,
        "error": error,
        "wall_time": None,
        "usage": None,
        "oom_killed": False,
        "changes": None,
    }
    if result is None:
        return doc
    rc = result.returncode
    doc["exit_code"] = rc if rc >= 0 else None
    doc["signal"] = -rc if rc < 0 else None
    doc["wall_time"] = result.wall_time
    u = result.usage
    doc["usage"] = {
        "cpu_user": u.cpu_user,
        "cpu_system": u.cpu_system,
        "max_rss": u.max_rss,
        "memory_peak": u.memory_peak,
        "pids_peak": u.pids_peak,
        "oom_kills": u.oom_kills,
    }
    doc["oom_killed"] = result.oom_killed
    ch = result.changes
    if ch is not None:
        doc["changes"] = {k: sorted(getattr(ch, k)) for k in ("added", "modified", "deleted")}
    return doc


def _open_json_target(target: str) -> Any:
    """Open ``PATH`` or ``fd:N`` for writing, before the payload runs.

    ``-`` is refused: the document would land in the middle of the command's own
    output on stdout (which may not even end with a newline).
    """
    if target == "-":
        raise UsageError(
            "--json -: stdout is the command's; write the document to a file or an fd "
            "instead: --json PATH, or --json fd:N (e.g. --json fd:3 3>result.json)"
        )
    if target.startswith("fd:"):
        try:
            fd = int(target[3:])
            return os.fdopen(os.dup(fd), "w", encoding="utf-8")
        except (ValueError, OSError) as e:
            raise UsageError(f"--json {target}: not an open file descriptor ({e})") from None
    try:
        return open(target, "w", encoding="utf-8")  # closed by _write_json
    except OSError as e:
        raise UsageError(f"--json {target}: {e.strerror}") from None


def _write_json(out: Any, doc: dict[str, Any]) -> None:
    with out:
        out.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")


# ------------------------------------------------------------------ commands
def _status(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def _command(args: argparse.Namespace) -> list[str]:
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise UsageError(f"{args.command} needs a command after --")
    if cmd[0].startswith("-") and args.cmd[0] != "--":
        raise UsageError(f"unrecognized arguments: {cmd[0]} (put the command after --)")
    return cmd


def _wait(proc: Process, timeout: float | None) -> bool:
    """Wait for ``proc``; False if ``timeout`` passed first.

    Always waits with a timeout: that path polls the pidfd from Python, so the
    signal handlers that forward SIGTERM to the sandbox get to run.
    """
    import time

    import nscg

    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        step = 3600.0 if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            proc.wait(step)
            return True
        except nscg.TimeoutExpired:
            if deadline is not None:
                return False


def _execute(c: Container, cmd: list[str], args: argparse.Namespace) -> int:
    import nscg

    out = _open_json_target(args.json) if args.json else None
    fds = bw.StatusFds(args)
    result: Result | None = None
    timed_out = False
    error: str | None = None
    status = EXIT_NSCG_ERROR
    proc: Process | None = None
    try:
        fds.before_spawn()
        proc = c.spawn(cmd)
        fds.started(proc.pid)
        with proc:
            forward = proc  # SIGTERM/SIGHUP/SIGQUIT to nscg go to the sandbox
            for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
                signal.signal(sig, lambda n, _f: forward.send_signal(n))
            if args.pid_file:
                with open(args.pid_file, "w", encoding="ascii") as f:
                    f.write(f"{proc.pid}\n")
            timed_out = not _wait(proc, args.timeout)
            if timed_out:
                proc.kill()
                proc.wait()
        result = proc._result(None, None)
        status = EXIT_TIMEOUT if timed_out else _status(result.returncode)
        if timed_out:
            print(f"nscg: timed out after {args.timeout:g} s; the sandbox was killed",
                  file=sys.stderr)  # fmt: skip
    except nscg.SpecError as e:
        error, status = str(e), EXIT_USAGE
    except nscg.NscgError as e:
        error = str(e)
    except KeyboardInterrupt:
        error, status = "interrupted", 130
    finally:
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
            signal.signal(sig, signal.SIG_DFL)
        if args.pid_file and proc is not None:
            with contextlib.suppress(OSError):
                os.unlink(args.pid_file)
        fds.ended(status if result is not None else None)
    if error is not None:
        print(f"nscg: {error}", file=sys.stderr)
    if args.json:
        _write_json(out, result_document(result, argv=cmd, status=status,
                                         timed_out=timed_out, error=error))  # fmt: skip
    return status


def _run(args: argparse.Namespace) -> int:
    import nscg

    cmd = _command(args) if args.cmd or not args.image else []
    if args.timeout is not None and not args.timeout > 0:
        raise UsageError(f"--timeout must be a positive number of seconds, not {args.timeout}")
    bw.check_modifiers(args)
    try:
        c = build_container(args)
    except nscg.SpecError as e:
        raise UsageError(str(e)) from None
    if not cmd:  # --image without CMD: the image's Entrypoint + Cmd
        cmd = list(c.command or ())
        if not cmd:
            raise UsageError("the image has no Entrypoint or Cmd: give a command after --")
    try:
        return _execute(c, cmd, args)
    finally:
        for ref in c.join:
            ref.close()


def _exec(args: argparse.Namespace) -> int:
    import nscg

    cmd = _command(args)
    try:
        with _no_such_process(f"exec --pid {args.pid}", args.pid):
            c = _process_options(nscg.Container(), args).entering(args.pid)
    except nscg.SpecError as e:
        raise UsageError(str(e)) from None
    except OSError as e:
        print(f"nscg: exec --pid {args.pid}: {e}", file=sys.stderr)
        return EXIT_NSCG_ERROR
    try:
        return _execute(c, cmd, args)
    finally:
        for ref in c.join:
            ref.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nscg`` command; returns the exit status."""
    try:
        words = bw.expand_args(sys.argv[1:] if argv is None else argv)
    except UsageError as e:
        print(f"nscg: {e}", file=sys.stderr)
        return EXIT_USAGE
    args = _parser().parse_args(words)
    import nscg

    try:
        if args.command == "check":
            from nscg.check import render, run_checks

            checks = run_checks()
            if args.json:
                print(json.dumps([attrs.asdict(c) for c in checks], indent=2))
            else:
                print(render(checks))
            return 0
        if args.command == "features":
            print(json.dumps(attrs.asdict(nscg.features()), indent=2, default=str))
            return 0
        if args.command == "exec":
            return _exec(args)
        if args.command == "images":
            return images_cli.main(args)
        return _run(args)
    except (UsageError, nscg.SpecError) as e:
        print(f"nscg: {e}", file=sys.stderr)
        return EXIT_USAGE
    except nscg.NscgError as e:
        print(f"nscg: {e}", file=sys.stderr)
        return EXIT_NSCG_ERROR
