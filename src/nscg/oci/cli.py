"""``nscg-oci``: an OCI runtime with runc's command line, running bundles with nscg.

What works now: ``spec``, ``features``, ``run`` (in the foreground), ``state``,
``list`` and ``delete`` of containers started by ``run``. ``create``/``start``
and the commands that act on a created container are not there yet and say
so (docs/oci.md has the plan).

The command path stays lean: this module imports only the standard library;
``run`` alone loads nscg's spawn machinery (``nscg-oci --version`` starts in
the time of the interpreter).
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any, NoReturn

from nscg.oci.state import ID_RE, CommandFailed, ContainerState, default_root, list_ids

__all__ = ["default_spec", "features", "main"]

_PROG = "nscg-oci"
#: signals ``run`` passes on to the container process (as runc's signal forwarding)
_FORWARDED = (
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGWINCH,
)
_NOT_YET = {
    "create": "create/start (a container set up, waiting before exec) is not supported yet",
    "start": "create/start is not supported yet: use run",
    "kill": "kill of a created container is not supported yet: signal the run process",
    "exec": "exec is not supported yet",
    "pause": "pause is not supported yet",
    "resume": "resume is not supported yet",
    "ps": "ps is not supported yet",
    "update": "update is not supported yet",
    "events": "events is not supported yet",
    "checkpoint": "checkpoint is not supported",
    "restore": "restore is not supported",
}


class _Log:
    """runc's logging: errors on stderr, and with ``--log`` in the log file (text or JSON)."""

    def __init__(self, path: str | None, fmt: str, debug: bool) -> None:
        self.path, self.fmt, self.debug_on = path, fmt, debug

    def _line(self, level: str, msg: str, fmt: str) -> str:
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        if fmt == "json":
            return json.dumps({"level": level, "msg": msg, "time": now}) + "\n"
        return f"time={json.dumps(now)} level={level} msg={json.dumps(msg)}\n"

    def _file(self, level: str, msg: str) -> None:
        if self.path:
            with open(self.path, "a") as f:
                f.write(self._line(level, msg, self.fmt))

    def error(self, msg: str) -> None:
        sys.stderr.write(self._line("error", msg, "text"))
        self._file("error", msg)

    def debug(self, msg: str) -> None:
        if not self.debug_on:
            return
        if self.path:
            self._file("debug", msg)
        else:
            sys.stderr.write(self._line("debug", msg, "text"))


# ------------------------------------------------------------------ spec, features
def default_spec(rootless: bool = False) -> dict[str, Any]:
    """runc's default ``config.json`` (``runc spec``), with ``terminal`` off.

    Args:
        rootless: runc's ``--rootless`` variant: a user namespace mapping the
            caller to root, no network namespace, /sys bound from the host.
    """
    caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    devpts = ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]
    if not rootless:
        devpts.append("gid=5")
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": devpts},
        {
            "destination": "/dev/shm",
            "type": "tmpfs",
            "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        },
        {
            "destination": "/dev/mqueue",
            "type": "mqueue",
            "source": "mqueue",
            "options": ["nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/sys",
            "type": "sysfs",
            "source": "sysfs",
            "options": ["nosuid", "noexec", "nodev", "ro"],
        },
        {
            "destination": "/sys/fs/cgroup",
            "type": "cgroup",
            "source": "cgroup",
            "options": ["nosuid", "noexec", "nodev", "relatime", "ro"],
        },
    ]
    namespaces = ["pid", "network", "ipc", "uts", "mount"]
    linux: dict[str, Any] = {
        "maskedPaths": [
            "/proc/acpi",
            "/proc/asound",
            "/proc/kcore",
            "/proc/keys",
            "/proc/latency_stats",
            "/proc/timer_list",
            "/proc/timer_stats",
            "/proc/sched_debug",
            "/sys/firmware",
            "/proc/scsi",
        ],
        "readonlyPaths": [
            "/proc/bus",
            "/proc/fs",
            "/proc/irq",
            "/proc/sys",
            "/proc/sysrq-trigger",
        ],
    }
    if rootless:
        namespaces = ["pid", "ipc", "uts", "mount", "user"]
        mounts[5] = {
            "destination": "/sys",
            "type": "none",
            "source": "/sys",
            "options": ["rbind", "nosuid", "noexec", "nodev", "ro"],
        }
        del mounts[6]
        linux["uidMappings"] = [{"containerID": 0, "hostID": os.geteuid(), "size": 1}]
        linux["gidMappings"] = [{"containerID": 0, "hostID": os.getegid(), "size": 1}]
    else:
        linux["resources"] = {"devices": [{"allow": False, "access": "rwm"}]}
    linux["namespaces"] = [{"type": t} for t in namespaces]
    return {
        "ociVersion": "1.2.0",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "TERM=xterm",
            ],
            "cwd": "/",
            "capabilities": {k: list(caps) for k in ("bounding", "effective", "permitted")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "nscg",
        "mounts": mounts,
        "linux": linux,
    }


def features() -> dict[str, Any]:
    """The runtime-spec "features" document of what ``nscg-oci`` can run now."""
    from nscg import __version__

    return {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.2.0",
        "hooks": [],
        "mountOptions": sorted(
            [
                "bind",
                "rbind",
                "ro",
                "rw",
                "nosuid",
                "suid",
                "nodev",
                "dev",
                "noexec",
                "exec",
                "private",
                "rprivate",
                "slave",
                "rslave",
                "defaults",
                "async",
                "silent",
                "loud",
                "newinstance",
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
            ]
        ),
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"],
            "capabilities": _capability_names(),
            "cgroup": {"v1": False, "v2": True, "systemd": False, "systemdUser": False},
            "seccomp": {
                "enabled": True,
                "actions": [
                    "SCMP_ACT_ALLOW",
                    "SCMP_ACT_ERRNO",
                    "SCMP_ACT_KILL",
                    "SCMP_ACT_KILL_PROCESS",
                    "SCMP_ACT_KILL_THREAD",
                    "SCMP_ACT_LOG",
                    "SCMP_ACT_TRACE",
                    "SCMP_ACT_TRAP",
                ],
                "operators": [
                    "SCMP_CMP_EQ",
                    "SCMP_CMP_GE",
                    "SCMP_CMP_GT",
                    "SCMP_CMP_LE",
                    "SCMP_CMP_LT",
                    "SCMP_CMP_MASKED_EQ",
                    "SCMP_CMP_NE",
                ],
                "archs": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_X86", "SCMP_ARCH_X86_64"],
                "supportedFlags": ["SECCOMP_FILTER_FLAG_TSYNC"],
            },
            "apparmor": {"enabled": False},
            "selinux": {"enabled": False},
            "intelRdt": {"enabled": False},
            "mountExtensions": {"idmap": {"enabled": False}},
        },
        "annotations": {"org.nscg.version": __version__},
    }


def _capability_names() -> list[str]:
    from nscg.capabilities import Capability

    return sorted(c.cap_name for c in Capability)


# ------------------------------------------------------------------ commands
def _rootless(args: SimpleNamespace) -> bool:
    value: str = args.rootless
    if value == "auto":
        return os.geteuid() != 0
    return value == "true"


def _state(args: SimpleNamespace, cid: str) -> ContainerState:
    if not ID_RE.fullmatch(cid):
        raise CommandFailed(f"invalid container id format: {cid}")
    return ContainerState(args.root, cid)


def _cmd_spec(args: SimpleNamespace, log: _Log) -> int:
    path = os.path.join(args.bundle or ".", "config.json")
    if os.path.exists(path):
        raise CommandFailed("File config.json exists. Remove it first.")
    with open(path, "w") as f:
        json.dump(default_spec(args.spec_rootless), f, indent="\t")
        f.write("\n")
    return 0


def _cmd_features(args: SimpleNamespace, log: _Log) -> int:
    json.dump(features(), sys.stdout, indent=4)
    sys.stdout.write("\n")
    return 0


def _cmd_state(args: SimpleNamespace, log: _Log) -> int:
    data = _state(args, args.id).read()
    if data is None:
        raise CommandFailed("container does not exist")
    json.dump(data, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def _cmd_list(args: SimpleNamespace, log: _Log) -> int:
    states = [s for s in (ContainerState(args.root, i).read() for i in list_ids(args.root)) if s]
    if args.quiet:
        for s in states:
            print(s["id"])
    elif args.format == "json":
        json.dump(states or None, sys.stdout)
        sys.stdout.write("\n")
    else:
        rows = [("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")]
        rows += [
            (s["id"], str(s["pid"]), s["status"], s["bundle"], s["created"], s["owner"])
            for s in states
        ]
        widths = [max(len(r[i]) for r in rows) + 3 for i in range(5)]
        for r in rows:
            print("".join(x.ljust(w) for x, w in zip(r, widths, strict=False)) + r[5])
    return 0


def _cmd_delete(args: SimpleNamespace, log: _Log) -> int:
    st = _state(args, args.id)
    data = st.read()
    if data is None:
        if args.force:
            return 0
        raise CommandFailed("container does not exist")
    live = st.running_pid()
    if live is not None:
        if not args.force:
            raise CommandFailed(f"cannot delete container {args.id} that is not stopped: running")
        _kill_and_wait(*live)
    st.remove()
    return 0


def _kill_and_wait(pid: int, start: int) -> None:
    """SIGKILL the container's process through a pidfd (never a recycled pid), wait its end."""
    from nscg.oci.state import process_start_time

    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        if process_start_time(pid) != start:
            return  # (it ended, and the pid is someone else's)
        signal.pidfd_send_signal(fd, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while process_start_time(pid) == start and time.monotonic() < deadline:
            time.sleep(0.005)
    except ProcessLookupError:
        pass
    finally:
        os.close(fd)


def _cmd_not_yet(args: SimpleNamespace, log: _Log) -> int:
    raise CommandFailed(_NOT_YET[args.command])


def _cmd_run(args: SimpleNamespace, log: _Log) -> int:
    if args.detach:
        raise CommandFailed("run --detach is not supported yet (it needs create/start)")
    if args.console_socket:
        raise CommandFailed("--console-socket is not supported yet (no terminal support)")
    st = _state(args, args.id)
    from nscg.oci.runner import run_bundle

    return run_bundle(
        st,
        bundle=os.path.abspath(args.bundle or "."),
        rootless=_rootless(args),
        pid_file=args.pid_file,
        cgroup_manager=args.cgroup_manager,
        preserve_fds=args.preserve_fds,
        log_debug=log.debug,
        forwarded=_FORWARDED,
    )


#: option name -> (attribute, takes a value, default); aliases share the attribute
_Opts = dict[str, tuple[str, bool, object]]
_GLOBAL: _Opts = {
    "--root": ("root", True, None),
    "--log": ("log", True, None),
    "--log-format": ("log_format", True, "text"),
    "--debug": ("debug", False, False),
    "--systemd-cgroup": ("systemd_cgroup", False, False),
    "--cgroup-manager": ("cgroup_manager", True, None),
    "--rootless": ("rootless", True, "auto"),
    "--version": ("version", False, False),
    "-v": ("version", False, False),
    "--help": ("help", False, False),
    "-h": ("help", False, False),
}
_CHOICES = {
    "log_format": ("text", "json"),
    "cgroup_manager": ("cgroupfs", "systemd", "disabled"),
    "rootless": ("true", "false", "auto"),
    "format": ("table", "json"),
}
_RUN: _Opts = {
    "--bundle": ("bundle", True, None),
    "-b": ("bundle", True, None),
    "--pid-file": ("pid_file", True, None),
    "--detach": ("detach", False, False),
    "-d": ("detach", False, False),
    "--console-socket": ("console_socket", True, None),
    "--preserve-fds": ("preserve_fds", True, "0"),
    # accepted without effect: nscg always pivots, makes no keyring, removes its state
    "--no-pivot": ("no_pivot", False, False),
    "--no-new-keyring": ("no_new_keyring", False, False),
    "--keep": ("keep", False, False),
}
#: command -> (options, number of positional arguments, handler, summary)
_COMMANDS: dict[str, tuple[_Opts, int, Any, str]] = {
    "spec": (
        {
            "--bundle": ("bundle", True, None),
            "-b": ("bundle", True, None),
            "--rootless": ("spec_rootless", False, False),
        },
        0,
        _cmd_spec,
        "write a default config.json",
    ),
    "features": ({}, 0, _cmd_features, "print the runtime-spec features document"),
    "run": (_RUN, 1, _cmd_run, "run a container in the foreground"),
    "state": ({}, 1, _cmd_state, "print a container's state (JSON)"),
    "list": (
        {
            "--format": ("format", True, "table"),
            "-f": ("format", True, "table"),
            "--quiet": ("quiet", False, False),
            "-q": ("quiet", False, False),
        },
        0,
        _cmd_list,
        "list the containers",
    ),
    "delete": (
        {"--force": ("force", False, False), "-f": ("force", False, False)},
        1,
        _cmd_delete,
        "delete a container (--force: kill it first)",
    ),
}
_USAGE = (
    f"usage: {_PROG} [global options] COMMAND [options] [ID]\n\n"
    "global options: --root DIR, --log FILE, --log-format text|json, --debug,\n"
    "  --systemd-cgroup, --cgroup-manager cgroupfs|systemd|disabled,\n"
    "  --rootless true|false|auto, --version\n\ncommands:\n"
    + "".join(f"  {k:10s}{v[3]}\n" for k, v in _COMMANDS.items())
    + "".join(f"  {k:10s}not supported yet\n" for k in _NOT_YET)
)


def _options(argv: list[str], i: int, table: _Opts, ns: SimpleNamespace) -> int:
    """Parse the options of ``table`` from ``argv[i:]``; the index of the first other word."""
    for attr, _, default in table.values():
        setattr(ns, attr, default)
    while i < len(argv) and argv[i].startswith("-") and argv[i] != "-":
        name, eq, value = argv[i].partition("=")
        if name not in table:
            raise CommandFailed(f"flag provided but not defined: {name}")
        attr, takes, _ = table[name]
        if takes and not eq:
            i += 1
            if i >= len(argv):
                raise CommandFailed(f"flag needs an argument: {name}")
            value = argv[i]
        if takes and attr in _CHOICES and value not in _CHOICES[attr]:
            raise CommandFailed(f"invalid value {value!r} for {name}: one of {_CHOICES[attr]}")
        setattr(ns, attr, value if takes else True)
        i += 1
    return i


def _parse(argv: list[str]) -> SimpleNamespace:
    """runc's command line: global options, a command, its options, then its arguments."""
    ns = SimpleNamespace(command=None)
    i = _options(argv, 0, _GLOBAL, ns)
    if ns.version or ns.help or i == len(argv):
        return ns
    ns.command = argv[i]
    if ns.command in _NOT_YET:
        ns.func = _cmd_not_yet
        return ns
    if ns.command not in _COMMANDS:
        raise CommandFailed(f"No help topic for '{ns.command}'")
    table, nargs, ns.func, _ = _COMMANDS[ns.command]
    i = _options(argv, i + 1, table, ns)
    rest = argv[i:]
    if len(rest) != nargs:
        what = "container id" if nargs else "no arguments"
        raise CommandFailed(f"{ns.command}: expected {what}, got {rest or 'none'}")
    if nargs:
        ns.id = rest[0]
    if ns.command == "run":
        try:
            ns.preserve_fds = int(ns.preserve_fds)
        except ValueError:
            raise CommandFailed(f"invalid --preserve-fds {ns.preserve_fds!r}") from None
    return ns


def _version() -> str:
    from nscg import __version__

    v = sys.version_info
    return f"{_PROG} version {__version__}\nspec: 1.2.0\npython: {v.major}.{v.minor}.{v.micro}\n"


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """The ``nscg-oci`` console script: exits with the command's status."""
    words = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _parse(words)
    except CommandFailed as e:
        sys.stderr.write(f"{_PROG}: {e}\n")
        sys.exit(1)
    if args.version:
        sys.stdout.write(_version())
        sys.exit(0)
    if args.help or args.command is None:
        (sys.stdout if args.help else sys.stderr).write(_USAGE)
        sys.exit(0 if args.help else 1)
    if args.systemd_cgroup:
        args.cgroup_manager = "systemd"
    if args.root is None:
        args.root = default_root(_rootless(args))
    log = _Log(args.log, args.log_format, args.debug)
    try:
        status = args.func(args, log)
    except CommandFailed as e:
        msg = str(e)
        if args.command == "run":
            msg = f"{_PROG} run failed: {msg}"
        log.error(msg)
        status = e.status
    except KeyboardInterrupt:
        status = 130
    except BrokenPipeError:
        status = 141
    sys.exit(status)
