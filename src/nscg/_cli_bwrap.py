"""bubblewrap's vocabulary for ``nscg run``: ordered filesystem ops, env ops, fds.

bwrap applies its filesystem options in command-line order, and ``--perms``
and ``--size`` modify the next one. Here one argparse action appends every
filesystem option to one ordered list (``args.fs_ops``), and
:func:`apply_fs_ops` turns that list into :class:`~nscg.rootfs.RootFS` ops in
the same order: the CLI stays a mapping (docs/cli.md, "bubblewrap's options").
The environment options likewise (``args.env_ops``). :class:`StatusFds` serves
``--info-fd``, ``--json-status-fd``, ``--sync-fd`` and ``--block-fd``;
:func:`expand_args` serves ``--args FD``.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
from collections.abc import Callable, Sequence
from typing import Any, Final, NamedTuple

from nscg.errors import SpecError
from nscg.namespaces import NamespaceRef
from nscg.rootfs import (
    Bind,
    Chmod,
    Data,
    Dev,
    File,
    Mkdir,
    Mqueue,
    Op,
    Proc,
    ReadOnly,
    RootFS,
    Symlink,
    Tmpfs,
)

__all__ = [
    "FS_OPTIONS",
    "FsOp",
    "StatusFds",
    "add_env_options",
    "add_fd_options",
    "add_fs_options",
    "apply_env",
    "apply_fs_ops",
    "check_modifiers",
    "expand_args",
    "namespace_fds",
]


class UsageError(Exception):
    """A bad command line (``nscg.cli`` prints it as one line, exit status 2)."""


class FsOp(NamedTuple):
    """One filesystem option as given: its name (no dashes), values, and modifiers."""

    kind: str
    values: tuple[str, ...]
    perms: int | None = None
    size: int | None = None


#: filesystem options: name -> (metavar, help). Each appends to ``args.fs_ops``.
FS_OPTIONS: Final[dict[str, tuple[tuple[str, ...], str]]] = {
    "bind": (("SRC", "DEST"), "bind SRC at DEST, writable (nosuid, nodev)"),
    "bind-try": (("SRC", "DEST"), "--bind, skipped if SRC does not exist"),
    "dev-bind": (("SRC", "DEST"), "bind SRC at DEST, writable, device nodes usable"),
    "dev-bind-try": (("SRC", "DEST"), "--dev-bind, skipped if SRC does not exist"),
    "ro-bind": (("SRC", "DEST"), "bind SRC at DEST, read-only"),
    "ro-bind-try": (("SRC", "DEST"), "--ro-bind, skipped if SRC does not exist"),
    "bind-fd": (("FD", "DEST"), "bind the directory open as FD at DEST, writable"),
    "ro-bind-fd": (("FD", "DEST"), "bind the directory open as FD at DEST, read-only"),
    "remount-ro": (("DEST",), "make the mount at DEST read-only (not the mounts below it)"),
    "proc": (("DEST",), "a new procfs at DEST"),
    "dev": (("DEST",), "a minimal /dev at DEST"),
    "mqueue": (("DEST",), "a new mqueue filesystem at DEST"),
    "tmpfs": (("DEST",), "a new tmpfs at DEST (mode 0755 unless --perms, size: --size)"),
    "dir": (("DEST",), "make a directory (mode 0755 unless --perms; an existing one is kept)"),
    "symlink": (("TARGET", "DEST"), "make a symlink DEST -> TARGET"),
    "file": (("FD", "DEST"), "copy what FD holds to a new file DEST (mode 0666 unless --perms)"),
    "bind-data": (("FD", "DEST"), "what FD holds, as a file bound at DEST (mode 0600)"),
    "ro-bind-data": (("FD", "DEST"), "--bind-data, read-only"),
    "chmod": (("OCTAL", "PATH"), "set the mode of PATH (it must exist by then)"),
}

#: the options --perms may precede; --size precedes --tmpfs only (as bwrap)
_TAKES_PERMS: Final = frozenset({"dir", "file", "bind-data", "ro-bind-data", "tmpfs"})


def _octal(text: str, what: str) -> int:
    try:
        mode = int(text, 8)
    except ValueError:
        raise UsageError(f"{what} takes an octal mode such as 0755, got {text!r}") from None
    if not 0 <= mode <= 0o7777:
        raise UsageError(f"{what} takes a mode from 0 to 07777, got {text!r}")
    return mode


class _FsAction(argparse.Action):
    """Append this option (and the pending --perms/--size) to ``fs_ops``, in order."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        kind = (option_string or self.option_strings[0]).lstrip("-")
        perms, size = getattr(namespace, "_perms", None), getattr(namespace, "_size", None)
        if perms is not None and kind not in _TAKES_PERMS:
            parser.error(f"--perms must be followed by an option that creates a file, not --{kind}")
        if size is not None and kind != "tmpfs":
            parser.error(f"--size must be followed by --tmpfs, not --{kind}")
        vals = (values,) if isinstance(values, str) else tuple(values or ())
        ops = list(getattr(namespace, self.dest, None) or [])
        ops.append(FsOp(kind, vals, perms, size))
        setattr(namespace, self.dest, ops)
        namespace._perms = namespace._size = None


class _Modifier(argparse.Action):
    """--perms OCTAL / --size BYTES: remembered for the next filesystem option."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        from nscg.cgroups._fs import parse_size

        assert isinstance(values, str)
        try:
            if option_string == "--perms":
                namespace._perms = _octal(values, "--perms")
            else:
                n = parse_size(values, what="--size")
                if n == "max" or n <= 0:
                    raise UsageError(f"--size takes a positive size such as 64M, got {values!r}")
                namespace._size = n
        except (UsageError, SpecError) as e:
            parser.error(str(e))


def add_fs_options(g: Any) -> None:
    """The ordered filesystem options, ``--perms`` and ``--size`` (bwrap's names)."""
    for name, (metavar, text) in FS_OPTIONS.items():
        g.add_argument(
            f"--{name}", dest="fs_ops", action=_FsAction, default=[],
            nargs=len(metavar) if len(metavar) > 1 else None,
            metavar=metavar if len(metavar) > 1 else metavar[0], help=text,
        )  # fmt: skip
    g.add_argument(
        "--perms", action=_Modifier, metavar="OCTAL",
        help="the mode of the next --tmpfs, --dir, --file, --bind-data or --ro-bind-data",
    )  # fmt: skip
    g.add_argument(
        "--size", action=_Modifier, metavar="BYTES", help="the size limit of the next --tmpfs"
    )


def check_modifiers(args: argparse.Namespace) -> None:
    """A --perms or --size with no option after it is an error (bwrap ignores a last --perms)."""
    if getattr(args, "_perms", None) is not None:
        raise UsageError("--perms must be followed by an option that creates a file")
    if getattr(args, "_size", None) is not None:
        raise UsageError("--size must be followed by --tmpfs")


def _fd(text: str, what: str) -> int:
    try:
        fd = int(text)
    except ValueError:
        raise UsageError(f"{what} takes a file descriptor number, got {text!r}") from None
    try:
        os.fstat(fd)
    except OSError:
        raise UsageError(f"{what} {text}: not an open file descriptor") from None
    return fd


def _read_fd(fd: int) -> bytes:
    chunks = []
    while True:
        b = os.read(fd, 1 << 16)
        if not b:
            break
        chunks.append(b)
    return b"".join(chunks)


def _fd_path(fd: int, what: str) -> str:
    """The path fd ``fd`` was opened at, checked to be the same file now.

    bwrap binds the fd itself; nscg binds by path (its child resolves the
    sources), so a file renamed or replaced meanwhile is refused here.
    """
    try:
        path = os.readlink(f"/proc/self/fd/{fd}")
        a, b = os.fstat(fd), os.stat(path)
    except OSError as e:
        raise UsageError(f"{what} {fd}: cannot find the path it was opened at ({e})") from None
    if not path.startswith("/") or (a.st_dev, a.st_ino) != (b.st_dev, b.st_ino):
        raise UsageError(f"{what} {fd}: its file is no longer at {path!r}")
    return path


def _bind(o: FsOp) -> Op | None:
    src = os.path.abspath(o.values[0])
    if o.kind.endswith("-try") and not os.path.lexists(src):
        return None
    # as bwrap: every bind is nosuid, and nodev unless --dev-bind
    return Bind(src, o.values[1], readonly=o.kind.startswith("ro-"), nosuid=True,
                nodev=not o.kind.startswith("dev-"))  # fmt: skip


def _bind_fd(o: FsOp) -> Op:
    src = _fd_path(_fd(o.values[0], f"--{o.kind}"), f"--{o.kind}")
    return Bind(src, o.values[1], readonly=o.kind.startswith("ro-"), nosuid=True, nodev=True)


def _data(o: FsOp) -> Op:
    fd = _fd(o.values[0], f"--{o.kind}")
    try:
        content = _read_fd(fd)
    except OSError as e:
        raise UsageError(f"--{o.kind} {fd}: cannot read it ({e.strerror})") from None
    os.close(fd)  # (bwrap closes it too)
    if o.kind == "file":
        return File(o.values[1], content, 0o666 if o.perms is None else o.perms)
    mode = 0o600 if o.perms is None else o.perms
    return Data(o.values[1], content, mode, readonly=o.kind == "ro-bind-data")


#: each option's RootFS op (None: a --*-try whose source is missing)
_FS_OPS: Final[dict[str, Callable[[FsOp], Op | None]]] = {
    "bind": _bind,
    "bind-try": _bind,
    "dev-bind": _bind,
    "dev-bind-try": _bind,
    "ro-bind": _bind,
    "ro-bind-try": _bind,
    "bind-fd": _bind_fd,
    "ro-bind-fd": _bind_fd,
    "remount-ro": lambda o: ReadOnly(o.values[0], optional=False, recursive=False),
    "proc": lambda o: Proc(o.values[0]),
    "dev": lambda o: Dev(o.values[0]),
    "mqueue": lambda o: Mqueue(o.values[0]),
    "tmpfs": lambda o: Tmpfs(o.values[0], size=o.size, mode=0o755 if o.perms is None else o.perms),
    "dir": lambda o: Mkdir(o.values[0], 0o755 if o.perms is None else o.perms),
    "symlink": lambda o: Symlink(o.values[0], o.values[1]),
    "file": _data,
    "bind-data": _data,
    "ro-bind-data": _data,
    "chmod": lambda o: Chmod(o.values[1], _octal(o.values[0], "--chmod")),
}


def apply_fs_ops(fs: RootFS, ops: Sequence[FsOp]) -> RootFS:
    """``fs`` with the filesystem options' ops appended, in command-line order.

    Raises:
        UsageError: an fd option names no open fd, or a mode is malformed.
        SpecError: an op is invalid (a relative destination, a missing source).
    """
    out: list[Op] = []
    for o in ops:
        op = _FS_OPS[o.kind](o)
        if op is not None:
            out += [*_parents(op.dest, o.perms), op]
    return fs.then(*out) if out else fs


def _parents(dest: str, perms: int | None) -> list[Op]:
    """As bwrap: with --perms that leave group or others nothing, the missing parent
    directories made for the op leave them nothing either (else they are 0755)."""
    if perms is None or (perms & 0o070 and perms & 0o007):
        return []
    mode = 0o755 & ~(0 if perms & 0o070 else 0o070) & ~(0 if perms & 0o007 else 0o007)
    parts = [p for p in dest.split("/") if p][:-1]
    # (a Mkdir of a directory that exists keeps it as it is)
    return [Mkdir("/" + "/".join(parts[: k + 1]), mode) for k in range(len(parts))]


# ------------------------------------------------------------------ environment
class _EnvAction(argparse.Action):
    """--env K=V, --setenv K V, --unsetenv K, --clearenv: one ordered list."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        ops = list(getattr(namespace, self.dest, None) or [])
        if option_string == "--env":
            assert isinstance(values, str)
            key, sep, value = values.partition("=")
            if not sep or not key:
                parser.error(f"--env takes NAME=VALUE, got {values!r}")
            ops.append(("set", key, value))
        elif option_string == "--setenv":
            assert values is not None and not isinstance(values, str)
            ops.append(("set", values[0], values[1]))
        elif option_string == "--unsetenv":
            assert isinstance(values, str)
            ops.append(("unset", values))
        else:
            ops.append(("clear",))
        setattr(namespace, self.dest, ops)


def add_env_options(g: Any) -> None:
    """--env, --setenv, --unsetenv, --clearenv (applied in order; see :func:`apply_env`)."""
    g.add_argument(
        "--env", dest="env_ops", action=_EnvAction, default=[], metavar="K=V",
        help="set a variable (repeatable)",
    )  # fmt: skip
    g.add_argument(
        "--setenv", dest="env_ops", action=_EnvAction, nargs=2, metavar=("VAR", "VALUE"),
        help="set a variable (bwrap's spelling of --env)",
    )  # fmt: skip
    g.add_argument(
        "--unsetenv", dest="env_ops", action=_EnvAction, metavar="VAR", help="unset a variable"
    )
    g.add_argument(
        "--clearenv", dest="env_ops", action=_EnvAction, nargs=0,
        help="start again from the default environment (PATH, HOME, TERM only): nscg "
        "never passes its own environment unless --inherit-env",
    )  # fmt: skip


def apply_env(
    base: dict[str, str], default: dict[str, str], ops: Sequence[tuple[str, ...]]
) -> dict[str, str]:
    """The environment: ``base`` changed by the env options in order (--clearenv: ``default``)."""
    env = dict(base)
    for op in ops:
        if op[0] == "set":
            env[op[1]] = op[2]
        elif op[0] == "unset":
            env.pop(op[1], None)
        else:
            env = dict(default)
    return env


# ------------------------------------------------------------------ fds
def add_fd_options(g: Any) -> None:
    """--sync-fd, --block-fd, --info-fd, --json-status-fd (bwrap's, see :class:`StatusFds`)."""
    g.add_argument(
        "--sync-fd", metavar="FD", type=int,
        help="keep FD open in nscg while the sandbox runs (its reader sees EOF at the end)",
    )  # fmt: skip
    g.add_argument(
        "--block-fd", metavar="FD", type=int,
        help="wait until FD has data (one byte is read) or EOF before starting the sandbox",
    )  # fmt: skip
    g.add_argument(
        "--info-fd", metavar="FD", type=int,
        help='write {"child-pid": N, "<kind>-namespace": ID...} as JSON to FD once started',
    )  # fmt: skip
    g.add_argument(
        "--json-status-fd", metavar="FD", type=int,
        help='JSON lines on FD: {"child-pid": N, ...} at the start, {"exit-code": N} at the end',
    )  # fmt: skip


#: namespace kinds bwrap names in --info-fd, as /proc/PID/ns names
_NS_NAMES: Final = ("cgroup", "ipc", "mnt", "net", "pid", "uts", "user")


class StatusFds:
    """The fds bwrap reports on and synchronizes with, for one ``nscg run``.

    ``--block-fd``: nscg reads one byte (or EOF) from it *before* it spawns
    the sandbox, since no Python runs in the child between clone and exec;
    bwrap blocks in the sandbox after setting it up. So the ``child-pid`` of
    ``--info-fd``/``--json-status-fd`` comes after the block is released
    here: a controller must not wait for it before writing to the block fd.
    ``--sync-fd``: kept open by nscg (close-on-exec, so no helper inherits it)
    and closed once the sandbox has ended; with ``--no-die-with-parent`` the
    sandbox may outlive nscg, and the fd.

    Raises:
        UsageError: one of the fds is not open.
    """

    def __init__(self, args: argparse.Namespace) -> None:
        self.block = _fd(str(args.block_fd), "--block-fd") if args.block_fd is not None else None
        self.sync = _fd(str(args.sync_fd), "--sync-fd") if args.sync_fd is not None else None
        self.info = _fd(str(args.info_fd), "--info-fd") if args.info_fd is not None else None
        self.status = (
            _fd(str(args.json_status_fd), "--json-status-fd")
            if args.json_status_fd is not None
            else None
        )
        if self.sync is not None:
            os.set_inheritable(self.sync, False)

    def before_spawn(self) -> None:
        """Wait for the block fd, if any."""
        if self.block is not None:
            os.read(self.block, 1)

    def started(self, pid: int) -> None:
        """Report the sandbox's first process: ``--info-fd`` (then closed), ``--json-status-fd``."""
        if self.info is None and self.status is None:
            return
        doc: dict[str, int] = {"child-pid": pid}
        for name in _NS_NAMES:
            try:
                mine = os.stat(f"/proc/self/ns/{name}").st_ino
                theirs = os.stat(f"/proc/{pid}/ns/{name}").st_ino
            except OSError:  # (ended already: the ids are gone with it)
                continue
            if theirs != mine:
                doc[f"{name}-namespace"] = theirs
        if self.info is not None:
            _write_all(self.info, json.dumps(doc, indent=4).encode() + b"\n")
            os.close(self.info)
            self.info = None
        if self.status is not None:
            _write_all(self.status, json.dumps(doc).encode() + b"\n")

    def ended(self, status: int | None) -> None:
        """Report the exit status (shell encoding: 128+N for signal N) and close every fd."""
        if self.status is not None:
            if status is not None:
                _write_all(self.status, json.dumps({"exit-code": status}).encode() + b"\n")
            os.close(self.status)
            self.status = None
        for name in ("info", "sync"):
            fd = getattr(self, name)
            if fd is not None:
                os.close(fd)
                setattr(self, name, None)


def _write_all(fd: int, data: bytes) -> None:
    try:
        while data:
            data = data[os.write(fd, data) :]
    except OSError:
        pass  # (a reader that went away: as bwrap, the sandbox still runs)


# ------------------------------------------------------------------ namespaces, --args
_NS_FD_OPTIONS: Final = {"userns": "user", "pidns": "pid", "netns": "net"}


def namespace_fds(args: argparse.Namespace) -> list[NamespaceRef]:
    """References of the namespaces --userns/--pidns/--netns FD name (dups: the caller closes)."""
    refs: list[NamespaceRef] = []
    for opt, kind in _NS_FD_OPTIONS.items():
        value = getattr(args, opt)
        if value is None:
            continue
        fd = _fd(str(value), f"--{opt}")
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or os.readlink(f"/proc/self/fd/{fd}").split(":")[0] != kind:
            for r in refs:
                r.close()
            raise UsageError(f"--{opt} {fd}: not a {kind} namespace (open /proc/PID/ns/{kind})")
        refs.append(NamespaceRef.from_fd(fd, kind))
    return refs


def expand_args(argv: Sequence[str], depth: int = 0) -> list[str]:
    """``argv`` with each ``--args FD`` before the command replaced by FD's NUL-separated words.

    As bwrap: the words are read (to EOF) where the option stands, and may
    hold ``--args`` again.

    Raises:
        UsageError: FD is not open, or cannot be read.
    """
    out: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            out += argv[i:]
            break
        if a != "--args":
            out.append(a)
            i += 1
            continue
        if i + 1 >= len(argv):
            raise UsageError("--args takes a file descriptor")
        if depth > 8:
            raise UsageError("--args nested too deeply")
        fd = _fd(argv[i + 1], "--args")
        try:
            data = _read_fd(fd)
        except OSError as e:
            raise UsageError(f"--args {fd}: cannot read it ({e.strerror})") from None
        words = [os.fsdecode(w) for w in data.split(b"\0")]
        if words and words[-1] == "":
            words.pop()
        out += expand_args(words, depth + 1)
        i += 2
    return out
