"""Seccomp filters: rules by syscall name, compiled to classic BPF in pure Python.

A :class:`Seccomp` is an immutable spec: a default :class:`Action`, a list of :class:`Rule`
(syscall name, optional argument comparisons, action) and the architectures the filter
accepts. :meth:`Seccomp.compile` turns it into the ``struct sock_filter`` array that
``seccomp(SECCOMP_SET_MODE_FILTER, ...)`` loads; no libseccomp is needed at run time.

Example::

    import errno
    from nscg.seccomp import Arg, Seccomp

    spec = (
        Seccomp.allow_all()
        .deny("ptrace", "kexec_load", errno=errno.EPERM)
        .deny("socket", when=[Arg(0).ne(1)], errno=errno.EACCES)  # only AF_UNIX sockets
    )
    program = spec.compile()            # bytes, 8 per instruction
    print(spec.disassemble())           # a seccomp-tools style listing

Semantics:

* The filter first checks ``seccomp_data.arch``: a call from an architecture the filter was
  not built for kills the process (``SECCOMP_RET_KILL_PROCESS``). On x86_64, x32 system
  calls (``nr & __X32_SYSCALL_BIT``) kill the process too; ``nr == -1`` (a syscall skipped
  by a tracer) gets the default action, as with libseccomp.
* When the default action refuses calls, syscall numbers above the highest one the filter
  knows (the architecture's table, generated from Linux 7.3, or a numeric rule) answer
  ``ENOSYS`` (:attr:`Seccomp.unknown_action`), as runc and crun do, so that C libraries fall
  back to older calls as on an older kernel.
* Rules name syscalls by name or by number (an ``int``, 0..0x7FFFFFFF).
* For one syscall, rules are tried from the most recently added to the oldest; the first
  whose comparisons all hold decides. So a later ``deny("x")`` overrides an earlier
  ``allow("x")``. Comparisons within one rule are ANDed; several rules give an OR.
* Arguments are compared as unsigned 64-bit values (both 32-bit halves are checked). On
  32-bit architectures the upper half of an argument is always 0.
"""

from __future__ import annotations

import enum
import errno as _errno
import functools
import json
import os
import platform
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import ClassVar, Final, NamedTuple

import attrs

from nscg import _bpf
from nscg._deprecate import renamed as _renamed
from nscg.errors import SpecError, SyscallError, UnsupportedError

__all__ = [
    "Action",
    "ActionKind",
    "Arch",
    "Arg",
    "ArgCmp",
    "CmpOp",
    "Rule",
    "Seccomp",
    "check_seccomp_supported",
    "disassemble",
    "max_syscall_number",
    "run_filter",
    "seccomp_action_available",
    "seccomp_supported",
    "syscall_name",
    "syscall_names",
    "syscall_number",
    "table_kernel_version",
]

_DATA: Final = Path(__file__).resolve().parent / "_data"
_U32: Final = 0xFFFFFFFF
_U64: Final = 0xFFFFFFFFFFFFFFFF
_X32_SYSCALL_BIT: Final = 0x40000000
_MAX_ERRNO: Final = 4095
_MAX_ARGS: Final = 6
#: The largest syscall number a rule may name: the kernel reads ``nr`` as a signed int, and
#: numbers with the top bit set are never a system call (-1 marks one a tracer skipped).
_MAX_RULE_NR: Final = 0x7FFFFFFF


# --------------------------------------------------------------------------- architectures


class Arch(enum.Enum):
    """An architecture a filter can be built for (value: nscg's table name)."""

    X86_64 = "x86_64"
    I386 = "i386"
    AARCH64 = "aarch64"

    @property
    def audit_arch(self) -> int:
        """The ``AUDIT_ARCH_*`` value the kernel puts in ``seccomp_data.arch``."""
        return _AUDIT_ARCH[self]

    @property
    def bits(self) -> int:
        """The width of a syscall argument on this architecture (32 or 64)."""
        return 32 if self is Arch.I386 else 64

    @classmethod
    def native(cls) -> Arch:
        """The architecture of this machine.

        Returns:
            The matching member.

        Raises:
            UnsupportedError: nscg has no syscall table for this machine.
        """
        machine = platform.machine()
        try:
            return cls.parse(machine)
        except SpecError:
            raise UnsupportedError(
                f"seccomp filters are not supported on architecture {machine!r} "
                f"(nscg has tables for {', '.join(a.value for a in cls)})",
                feature="seccomp.arch",
            ) from None

    @classmethod
    def parse(cls, value: Arch | str) -> Arch:
        """Accept an :class:`Arch`, a name (``"x86_64"``, ``"amd64"``, ``"SCMP_ARCH_X86"``...).

        Args:
            value: the architecture.

        Returns:
            The matching member.

        Raises:
            SpecError: the name is unknown or unsupported.
        """
        if isinstance(value, Arch):
            return value
        key = str(value).lower().removeprefix("scmp_arch_")
        try:
            return _ARCH_ALIASES[key]
        except KeyError:
            raise SpecError(
                f"unsupported architecture {value!r}; supported: {', '.join(a.value for a in Arch)}"
            ) from None


_AUDIT_ARCH: Final = {Arch.X86_64: 0xC000003E, Arch.I386: 0x40000003, Arch.AARCH64: 0xC00000B7}
_ARCH_BY_AUDIT: Final = {v: k for k, v in _AUDIT_ARCH.items()}
_ARCH_ALIASES: Final = {
    "x86_64": Arch.X86_64,
    "amd64": Arch.X86_64,
    "x64": Arch.X86_64,
    "i386": Arch.I386,
    "i686": Arch.I386,
    "x86": Arch.I386,
    "386": Arch.I386,
    "aarch64": Arch.AARCH64,
    "arm64": Arch.AARCH64,
}
#: Names used by OCI/Docker profiles' ``includes``/``excludes`` ``arches`` (Go's GOARCH).
_GOARCH: Final = {
    Arch.X86_64: frozenset({"amd64", "x86_64"}),
    Arch.I386: frozenset({"386", "x86", "i386"}),
    Arch.AARCH64: frozenset({"arm64", "aarch64"}),
}


# --------------------------------------------------------------------------- syscall tables


@attrs.frozen
class _Table:
    arch: Arch
    by_name: Mapping[str, int]
    by_number: Mapping[int, str]
    kernel_version: str
    source: str
    #: The highest syscall number of the table.
    max_nr: int


def _read_data(name: str) -> Mapping[str, object]:
    """Read one of nscg's bundled JSON files; a broken installation is a typed error."""
    path = _DATA / name
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise SyscallError(
            exc.errno or _errno.EIO, "open", str(path), detail="nscg's bundled data is unreadable"
        ) from None
    except ValueError as exc:
        raise UnsupportedError(
            f"nscg's bundled {path} is corrupt ({exc}); reinstall nscg", feature="seccomp.data"
        ) from None
    if not isinstance(data, dict):
        raise UnsupportedError(
            f"nscg's bundled {path} is not a JSON object", feature="seccomp.data"
        )
    return data


@functools.cache
def _table(arch: Arch) -> _Table:
    raw = _read_data(f"syscalls_{arch.value}.json")
    syscalls = raw.get("syscalls")
    if not isinstance(syscalls, dict) or not syscalls:
        raise UnsupportedError(
            f"nscg's bundled syscall table for {arch.value} is empty", feature="seccomp.data"
        )
    by_name: dict[str, int] = {str(k): int(v) for k, v in syscalls.items()}
    return _Table(
        arch=arch,
        by_name=by_name,
        by_number={v: k for k, v in by_name.items()},
        kernel_version=str(raw.get("kernel_version", "")),
        source=str(raw.get("source", "")),
        max_nr=max(by_name.values()),
    )


def table_kernel_version(arch: Arch | str | None = None) -> str:
    """The Linux version nscg's syscall table for an architecture was generated from.

    Args:
        arch: the architecture (default: this machine's).

    Returns:
        The version, e.g. ``"7.3.4"``.
    """
    target = Arch.native() if arch is None else Arch.parse(arch)
    return _table(target).kernel_version


def max_syscall_number(arch: Arch | str | None = None) -> int:
    """The highest syscall number in nscg's table for an architecture.

    Filters whose default action refuses a call answer ``ENOSYS`` above it (see
    :attr:`Seccomp.unknown_action`).

    Args:
        arch: the architecture (default: this machine's).

    Returns:
        The number.
    """
    target = Arch.native() if arch is None else Arch.parse(arch)
    return _table(target).max_nr


@functools.cache
def _all_names() -> frozenset[str]:
    names: set[str] = set()
    for arch in Arch:
        names.update(_table(arch).by_name)
    return frozenset(names)


def syscall_number(name: str, arch: Arch | str | None = None) -> int:
    """The number of a system call.

    Args:
        name: the syscall name, as in the kernel's tables (``"openat"``).
        arch: the architecture (default: this machine's).

    Returns:
        The syscall number.

    Raises:
        SpecError: the architecture has no such syscall.
    """
    target = Arch.native() if arch is None else Arch.parse(arch)
    try:
        return _table(target).by_name[name]
    except KeyError:
        raise SpecError(f"no syscall named {name!r} on {target.value}") from None


def syscall_name(number: int, arch: Arch | str | None = None) -> str | None:
    """The name of a system call number, or None if the table has no such number.

    Args:
        number: the syscall number.
        arch: the architecture (default: this machine's).

    Returns:
        The name, or None.
    """
    target = Arch.native() if arch is None else Arch.parse(arch)
    return _table(target).by_number.get(number)


def syscall_names(arch: Arch | str | None = None) -> frozenset[str]:
    """All syscall names nscg knows for an architecture.

    Args:
        arch: the architecture (default: this machine's).

    Returns:
        The names.
    """
    target = Arch.native() if arch is None else Arch.parse(arch)
    return frozenset(_table(target).by_name)


# --------------------------------------------------------------------------- actions


class ActionKind(enum.IntEnum):
    """The action part of a seccomp return value (``SECCOMP_RET_*``, linux/seccomp.h)."""

    KILL_PROCESS = 0x80000000
    KILL_THREAD = 0x00000000
    TRAP = 0x00030000
    ERRNO = 0x00050000
    USER_NOTIF = 0x7FC00000
    TRACE = 0x7FF00000
    LOG = 0x7FFC0000
    ALLOW = 0x7FFF0000


#: Default actions under which a call the filter does not know is not refused by the filter.
_PASSING_KINDS: Final = frozenset(
    {ActionKind.ALLOW, ActionKind.LOG, ActionKind.TRACE, ActionKind.USER_NOTIF}
)
_RET_ACTION_FULL: Final = 0xFFFF0000
_RET_DATA: Final = 0x0000FFFF
_KINDS_WITH_DATA: Final = frozenset({ActionKind.ERRNO, ActionKind.TRAP, ActionKind.TRACE})


def _check_action_data(instance: Action, attribute: attrs.Attribute[int], value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise SpecError(f"action data must be an int, not {type(value).__name__}")
    if instance.kind is ActionKind.ERRNO:
        if not 0 <= value <= _MAX_ERRNO:
            raise SpecError(f"errno must be in 0..{_MAX_ERRNO}, not {value}")
    elif instance.kind in _KINDS_WITH_DATA:
        if not 0 <= value <= _RET_DATA:
            raise SpecError(f"{instance.kind.name} data must be in 0..65535, not {value}")
    elif value:
        raise SpecError(f"{instance.kind.name} takes no data (got {value})")


def _to_kind(value: ActionKind | int | str) -> ActionKind:
    try:
        if isinstance(value, str):
            return ActionKind[value.upper()]
        return ActionKind(value)
    except (KeyError, ValueError):
        raise SpecError(f"unknown seccomp action {value!r}") from None


@attrs.frozen
class Action:
    """What the filter returns for a syscall: an :class:`ActionKind` and its 16-bit data.

    Use the constants and constructors rather than the class itself::

        Action.ALLOW, Action.KILL_PROCESS, Action.KILL_THREAD, Action.LOG, Action.USER_NOTIF
        Action.errno(errno.EPERM), Action.trap(data=0), Action.trace(data=0)

    ``USER_NOTIF`` needs the filter to be loaded with ``SECCOMP_FILTER_FLAG_NEW_LISTENER``
    (Linux 5.0); ``KILL_PROCESS`` needs Linux 4.14, ``LOG`` 4.14.
    """

    kind: ActionKind = attrs.field(converter=_to_kind)
    data: int = attrs.field(default=0, validator=_check_action_data)

    ALLOW: ClassVar[Action]
    KILL_PROCESS: ClassVar[Action]
    KILL_THREAD: ClassVar[Action]
    LOG: ClassVar[Action]
    USER_NOTIF: ClassVar[Action]

    @classmethod
    def errno(cls, err: int = _errno.EPERM) -> Action:
        """Fail the syscall with ``-err`` without running it.

        Args:
            err: the errno value, 0..4095 (0 makes the syscall "succeed" with 0).

        Returns:
            The action.

        Raises:
            SpecError: ``err`` is out of range.
        """
        return cls(ActionKind.ERRNO, err)

    @classmethod
    def trap(cls, data: int = 0) -> Action:
        """Send SIGSYS to the thread; ``data`` is reported in ``si_errno``.

        Args:
            data: 0..65535.

        Returns:
            The action.

        Raises:
            SpecError: ``data`` is out of range.
        """
        return cls(ActionKind.TRAP, data)

    @classmethod
    def trace(cls, data: int = 0) -> Action:
        """Notify a ptrace tracer (``PTRACE_EVENT_SECCOMP``); without one, fail with ENOSYS.

        Args:
            data: 0..65535, readable by the tracer with ``PTRACE_GETEVENTMSG``.

        Returns:
            The action.

        Raises:
            SpecError: ``data`` is out of range.
        """
        return cls(ActionKind.TRACE, data)

    @property
    def value(self) -> int:
        """The 32-bit ``SECCOMP_RET_*`` value the BPF program returns."""
        return int(self.kind) | self.data

    @classmethod
    def from_value(cls, value: int) -> Action:
        """Decode a filter's return value as the kernel does.

        Args:
            value: a 32-bit return value.

        Returns:
            The action. An action the kernel does not know is treated as ``KILL_PROCESS``,
            like the kernel does; ``ERRNO`` data above 4095 is clamped to 4095.
        """
        value &= _U32
        try:
            kind = ActionKind(value & _RET_ACTION_FULL)
        except ValueError:
            return cls.KILL_PROCESS
        data = value & _RET_DATA if kind in _KINDS_WITH_DATA else 0
        if kind is ActionKind.ERRNO:
            data = min(data, _MAX_ERRNO)
        return cls(kind, data)

    @classmethod
    def from_oci(cls, name: str, errno_ret: int | None = None) -> Action:
        """Parse an OCI/Docker action name (``"SCMP_ACT_ERRNO"``...).

        Args:
            name: the action name; ``SCMP_ACT_KILL`` means ``KILL_THREAD`` as in libseccomp.
            errno_ret: ``errnoRet`` for ``SCMP_ACT_ERRNO`` and ``SCMP_ACT_TRACE``
                (default EPERM, as runc does).

        Returns:
            The action.

        Raises:
            SpecError: the name is unknown.
        """
        key = str(name).upper().removeprefix("SCMP_ACT_")
        data = _errno.EPERM if errno_ret is None else errno_ret
        simple = {
            "KILL": cls.KILL_THREAD,
            "KILL_THREAD": cls.KILL_THREAD,
            "KILL_PROCESS": cls.KILL_PROCESS,
            "ALLOW": cls.ALLOW,
            "LOG": cls.LOG,
            "NOTIFY": cls.USER_NOTIF,
            "TRAP": cls.trap(),
        }
        if key in simple:
            return simple[key]
        if key == "ERRNO":
            return cls.errno(data)
        if key == "TRACE":
            return cls.trace(data)
        raise SpecError(f"unknown seccomp action {name!r} in profile")

    def __str__(self) -> str:
        if self.kind is ActionKind.ERRNO:
            return f"ERRNO({self.data})"
        if self.kind in _KINDS_WITH_DATA:
            return f"{self.kind.name}({self.data})"
        return self.kind.name


Action.ALLOW = Action(ActionKind.ALLOW)
Action.KILL_PROCESS = Action(ActionKind.KILL_PROCESS)
Action.KILL_THREAD = Action(ActionKind.KILL_THREAD)
Action.LOG = Action(ActionKind.LOG)
Action.USER_NOTIF = Action(ActionKind.USER_NOTIF)


def _to_action(value: Action | ActionKind) -> Action:
    if isinstance(value, Action):
        return value
    if isinstance(value, ActionKind):
        return Action(value)
    raise SpecError(f"expected an Action, not {value!r}")


# --------------------------------------------------------------------------- comparisons


class CmpOp(enum.Enum):
    """A comparison of a syscall argument (unsigned, 64-bit)."""

    EQ = "=="
    NE = "!="
    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="
    MASKED_EQ = "&=="

    @classmethod
    def from_oci(cls, name: str) -> CmpOp:
        """Parse ``SCMP_CMP_EQ``-style names.

        Args:
            name: the OCI op name.

        Returns:
            The operator.

        Raises:
            SpecError: the name is unknown.
        """
        key = str(name).upper().removeprefix("SCMP_CMP_")
        try:
            return cls[key]
        except KeyError:
            raise SpecError(f"unknown comparison {name!r} in profile") from None


def _check_u64(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise SpecError(f"{attribute.name} must be an int, not {type(value).__name__}")
    if not 0 <= value <= _U64:
        raise SpecError(
            f"{attribute.name} {value} is not an unsigned 64-bit value "
            f"(for a negative C value pass value & 0xFFFFFFFFFFFFFFFF)"
        )


def _check_index(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < _MAX_ARGS:
        raise SpecError(f"syscall argument index must be 0..5, not {value!r}")


def _to_op(value: CmpOp | str) -> CmpOp:
    if isinstance(value, CmpOp):
        return value
    try:
        return CmpOp(value)
    except ValueError:
        return CmpOp.from_oci(value)


@attrs.frozen
class ArgCmp:
    """``args[index] <op> value`` (for MASKED_EQ: ``args[index] & mask == value``).

    Build them with :class:`Arg`: ``Arg(0).eq(1)``, ``Arg(2).masked_eq(0o3, 0)``.
    """

    index: int = attrs.field(validator=_check_index)
    op: CmpOp = attrs.field(converter=_to_op)
    value: int = attrs.field(validator=_check_u64)
    mask: int = attrs.field(default=_U64, validator=_check_u64)

    def __attrs_post_init__(self) -> None:
        if self.op is not CmpOp.MASKED_EQ and self.mask != _U64:
            raise SpecError(f"a mask is only meaningful with MASKED_EQ, not {self.op.name}")

    def holds(self, arg: int) -> bool:
        """Evaluate the comparison on an argument value (the reference semantics).

        Args:
            arg: the argument (taken modulo 2**64).

        Returns:
            Whether the comparison holds.
        """
        a = arg & _U64
        op = self.op
        if op is CmpOp.EQ:
            return a == self.value
        if op is CmpOp.NE:
            return a != self.value
        if op is CmpOp.LT:
            return a < self.value
        if op is CmpOp.LE:
            return a <= self.value
        if op is CmpOp.GT:
            return a > self.value
        if op is CmpOp.GE:
            return a >= self.value
        return a & self.mask == self.value

    def __str__(self) -> str:
        if self.op is CmpOp.MASKED_EQ:
            return f"args[{self.index}] & {self.mask:#x} == {self.value:#x}"
        return f"args[{self.index}] {self.op.value} {self.value:#x}"


@attrs.frozen
class Arg:
    """A syscall argument, for building comparisons: ``Arg(1).ge(4096)``."""

    index: int = attrs.field(validator=_check_index)

    def eq(self, value: int) -> ArgCmp:
        """``args[index] == value``.

        Args:
            value: unsigned 64-bit value.

        Returns:
            The comparison.

        Raises:
            SpecError: ``value`` is out of range.
        """
        return ArgCmp(self.index, CmpOp.EQ, value)

    def ne(self, value: int) -> ArgCmp:
        """``args[index] != value``.

        Args:
            value: unsigned 64-bit value.

        Returns:
            The comparison.

        Raises:
            SpecError: ``value`` is out of range.
        """
        return ArgCmp(self.index, CmpOp.NE, value)

    def lt(self, value: int) -> ArgCmp:
        """``args[index] < value`` (unsigned).

        Args:
            value: unsigned 64-bit value.

        Returns:
            The comparison.

        Raises:
            SpecError: ``value`` is out of range.
        """
        return ArgCmp(self.index, CmpOp.LT, value)

    def le(self, value: int) -> ArgCmp:
        """``args[index] <= value`` (unsigned).

        Args:
            value: unsigned 64-bit value.

        Returns:
            The comparison.

        Raises:
            SpecError: ``value`` is out of range.
        """
        return ArgCmp(self.index, CmpOp.LE, value)

    def gt(self, value: int) -> ArgCmp:
        """``args[index] > value`` (unsigned).

        Args:
            value: unsigned 64-bit value.

        Returns:
            The comparison.

        Raises:
            SpecError: ``value`` is out of range.
        """
        return ArgCmp(self.index, CmpOp.GT, value)

    def ge(self, value: int) -> ArgCmp:
        """``args[index] >= value`` (unsigned).

        Args:
            value: unsigned 64-bit value.

        Returns:
            The comparison.

        Raises:
            SpecError: ``value`` is out of range.
        """
        return ArgCmp(self.index, CmpOp.GE, value)

    def masked_eq(self, mask: int, value: int) -> ArgCmp:
        """``args[index] & mask == value``.

        Args:
            mask: unsigned 64-bit mask.
            value: unsigned 64-bit value.

        Returns:
            The comparison.

        Raises:
            SpecError: a value is out of range.
        """
        return ArgCmp(self.index, CmpOp.MASKED_EQ, value, mask)


# --------------------------------------------------------------------------- rules


def _check_syscall(instance: Rule, attribute: attrs.Attribute[str | int], value: str | int) -> None:
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value <= _MAX_RULE_NR:
            raise SpecError(
                f"syscall number {value} is out of range (0..{_MAX_RULE_NR:#x}; "
                f"-1 and negative numbers are never a system call)"
            )
        return
    if not isinstance(value, str) or not value:
        raise SpecError(f"syscall must be a non-empty name or an int number, not {value!r}")
    if not instance.optional and value not in _all_names():
        hint = "; pass a number as an int" if value.lstrip("-").isdigit() else ""
        raise SpecError(
            f"unknown syscall {value!r} (not in nscg's x86_64, i386 or aarch64 table){hint}"
        )


def _check_nr_for(nr: int, arch: Arch) -> None:
    """Refuse a numeric rule that cannot mean a native syscall of ``arch``."""
    if arch is Arch.X86_64 and nr & _X32_SYSCALL_BIT:
        raise SpecError(
            f"syscall number {nr:#x} has the x32 bit (0x40000000) set: x32 calls are always "
            f"killed by nscg's filters on x86_64; name an x86_64 number below 0x40000000"
        )


def _to_cmps(value: ArgCmp | Iterable[ArgCmp]) -> tuple[ArgCmp, ...]:
    if isinstance(value, ArgCmp):
        return (value,)
    out = tuple(value)
    for item in out:
        if not isinstance(item, ArgCmp):
            raise SpecError(f"expected ArgCmp comparisons (e.g. Arg(0).eq(1)), not {item!r}")
    return out


@attrs.frozen
class Rule:
    """One rule: for ``syscall``, if every comparison in ``args`` holds, return ``action``.

    ``syscall`` is a name from the kernel's tables (``"openat"``) or a number (an ``int``,
    0..0x7FFFFFFF): a number means that number on every architecture the filter accepts,
    so it is mostly useful with a single architecture, for a syscall newer than nscg's
    tables. On x86_64 a number with the x32 bit (0x40000000) is refused when compiling.

    ``optional`` rules are skipped on architectures whose table lacks the syscall (profiles
    load this way; :meth:`Seccomp.skipped_syscalls` lists them); a non-optional rule naming a
    syscall no target architecture has is a :class:`~nscg.SpecError`.
    """

    syscall: str | int = attrs.field(validator=_check_syscall)
    action: Action = attrs.field(converter=_to_action)
    args: tuple[ArgCmp, ...] = attrs.field(default=(), converter=_to_cmps)
    optional: bool = attrs.field(default=False, kw_only=True)

    def number(self, arch: Arch) -> int | None:
        """The syscall number this rule applies to on ``arch``, or None if it has none.

        Args:
            arch: the architecture.

        Returns:
            The number, or None when the table of ``arch`` lacks the name.
        """
        if isinstance(self.syscall, int):
            return self.syscall
        return _table(arch).by_name.get(self.syscall)

    def matches(self, args: Sequence[int]) -> bool:
        """Whether every comparison holds for these arguments (missing ones are 0).

        Args:
            args: the syscall arguments.

        Returns:
            True if the rule applies.
        """
        padded = list(args) + [0] * (_MAX_ARGS - len(args))
        return all(cmp.holds(padded[cmp.index]) for cmp in self.args)

    def __str__(self) -> str:
        cond = " && ".join(str(c) for c in self.args)
        return f"{self.syscall}{f' if {cond}' if cond else ''} -> {self.action}"


# --------------------------------------------------------------------------- the spec


def _to_arches(value: Iterable[Arch | str]) -> tuple[Arch, ...]:
    if isinstance(value, (Arch, str)):
        value = (value,)
    out: list[Arch] = []
    for item in value:
        arch = Arch.parse(item)
        if arch not in out:
            out.append(arch)
    return tuple(out)


def _to_rules(value: Iterable[Rule]) -> tuple[Rule, ...]:
    out = tuple(value)
    for item in out:
        if not isinstance(item, Rule):
            raise SpecError(f"expected Rule, not {item!r}")
    return out


def _norm_cap(cap: object) -> str:
    name = cap if isinstance(cap, str) else getattr(cap, "name", None)
    if not isinstance(name, str):
        raise SpecError(f"capability must be a name like 'CAP_SYS_ADMIN', not {cap!r}")
    name = name.upper()
    return name if name.startswith("CAP_") else "CAP_" + name


def _parse_version(text: str) -> tuple[int, ...]:
    from nscg._host import parse_release

    return parse_release(str(text))


def _kernel_release() -> str:
    from nscg._host import kernel_release

    return kernel_release()


@functools.cache
def _docker_profile() -> Mapping[str, object]:
    return _read_data("seccomp_docker_default.json")


@attrs.frozen(cache_hash=True)
class Seccomp:
    """A seccomp filter spec: default action, rules and accepted architectures.

    Build it with a named constructor and the ``allow``/``deny``/... methods, each of which
    returns a new spec::

        Seccomp.deny_all().allow("read", "write", "exit_group")
        Seccomp.allow_all().deny("mount", "umount2", errno=errno.EPERM)
        Seccomp.docker_default(capabilities={"CAP_CHOWN", "CAP_SYS_CHROOT"})

    Attributes:
        default_action: what a syscall no rule matches gets.
        rules: the rules, oldest first (the newest matching rule of a syscall wins).
        arches: the architectures the filter accepts; empty means this machine's only.
            Calls from any other architecture kill the process.
        unknown_action: what a syscall number above the highest one the filter knows (the
            architecture's table and the numeric rules) gets, when the default action
            refuses calls (``ERRNO``, ``TRAP``, ``KILL_*``). Default ``ERRNO(ENOSYS)``, as
            runc and crun do: a C library that tries a syscall newer than the filter then
            falls back to an older one, as on an older kernel, instead of failing with
            EPERM. ``None``: such numbers get the default action. With a default that
            lets calls through (``ALLOW``, ``LOG``, ``TRACE``, ``USER_NOTIF``) it has no
            effect: the kernel answers ENOSYS for numbers it lacks anyway.
    """

    default_action: Action = attrs.field(
        default=Action(ActionKind.ERRNO, _errno.EPERM), converter=_to_action
    )
    rules: tuple[Rule, ...] = attrs.field(default=(), converter=_to_rules)
    arches: tuple[Arch, ...] = attrs.field(default=(), converter=_to_arches)
    unknown_action: Action | None = attrs.field(
        default=Action(ActionKind.ERRNO, _errno.ENOSYS),
        converter=attrs.converters.optional(_to_action),
    )

    # ---- named constructors

    @classmethod
    def allow_all(cls) -> Seccomp:
        """A blocklist: every syscall is allowed unless a rule says otherwise.

        Returns:
            The spec.
        """
        return cls(Action.ALLOW)

    @classmethod
    def deny_all(cls, errno: int = _errno.EPERM) -> Seccomp:
        """An allowlist: every syscall fails with ``errno`` unless a rule allows it.

        Args:
            errno: the error returned by denied syscalls.

        Returns:
            The spec.

        Raises:
            SpecError: ``errno`` is out of range.
        """
        return cls(Action.errno(errno))

    @classmethod
    def kill_all(cls) -> Seccomp:
        """An allowlist whose default action kills the process.

        Returns:
            The spec.
        """
        return cls(Action.KILL_PROCESS)

    @classmethod
    def from_oci(
        cls,
        profile: Mapping[str, object] | str | os.PathLike[str],
        *,
        capabilities: Iterable[object] = (),
        arch: Arch | str | None = None,
        kernel: str | None = None,
        multiarch: bool = False,
    ) -> Seccomp:
        """Load an OCI runtime-spec / Docker seccomp profile.

        Entries are filtered as Docker does: ``includes``/``excludes`` by ``caps`` (the
        capabilities the sandbox keeps), ``arches`` (Go names: amd64, 386, arm64...) and
        ``minKernel``. Entries whose action equals the default action are dropped (libseccomp
        refuses them). Several comparisons on the same argument index become separate rules
        (ORed), as runc does; otherwise they are ANDed. Syscall names unknown to the target
        architecture are skipped.

        Args:
            profile: the parsed JSON, or the path of a JSON file.
            capabilities: the capabilities kept, as names (``"CAP_SYS_ADMIN"`` or
                ``"SYS_ADMIN"``) or enum members whose ``name`` is such a name.
            arch: the architecture the filter is for (default: this machine's).
            kernel: the kernel version for ``minKernel`` (default: the running kernel's).
            multiarch: also accept the profile's sub-architectures that nscg supports
                (i386 on x86_64), as Docker does. Off by default: native only.

        Returns:
            The spec.

        Raises:
            SpecError: the profile is malformed or uses an unknown action or operator.
            SyscallError: the file cannot be read (an :class:`OSError` and an
                :class:`~nscg.NscgError`).
        """
        if isinstance(profile, Mapping):
            data: Mapping[str, object] = profile
        else:
            try:
                text = Path(profile).read_bytes().decode()
            except OSError as exc:
                raise SyscallError(
                    exc.errno or _errno.EIO,
                    "open",
                    str(profile),
                    detail="cannot read the seccomp profile",
                ) from None
            except UnicodeDecodeError as exc:
                raise SpecError(f"seccomp profile {str(profile)!r} is not UTF-8: {exc}") from None
            try:
                loaded = json.loads(text)
            except json.JSONDecodeError as exc:
                raise SpecError(f"seccomp profile {str(profile)!r} is not JSON: {exc}") from None
            if not isinstance(loaded, dict):
                raise SpecError("a seccomp profile must be a JSON object")
            data = loaded
        return _load_oci(
            cls,
            data,
            capabilities=frozenset(_norm_cap(c) for c in capabilities),
            arch=Arch.native() if arch is None else Arch.parse(arch),
            kernel=_parse_version(kernel if kernel is not None else _kernel_release()),
            multiarch=multiarch,
        )

    @classmethod
    def docker_default(
        cls,
        capabilities: Iterable[object] = (),
        *,
        arch: Arch | str | None = None,
        kernel: str | None = None,
        multiarch: bool = False,
    ) -> Seccomp:
        """Docker's default profile (moby's ``profiles/seccomp/default.json``, bundled).

        Args:
            capabilities: the capabilities the sandbox keeps; rules gated on others are
                left out (e.g. ``mount`` needs ``CAP_SYS_ADMIN``, ``chroot``
                ``CAP_SYS_CHROOT``). Default: none, the strictest.
            arch: the architecture (default: this machine's).
            kernel: the kernel version for ``minKernel`` (default: the running kernel's).
            multiarch: also accept i386 calls on x86_64, as Docker does.

        Returns:
            The spec (default action ``ERRNO(EPERM)``).
        """
        return cls.from_oci(
            _docker_profile(),
            capabilities=capabilities,
            arch=arch,
            kernel=kernel,
            multiarch=multiarch,
        )

    # ---- immutable builders

    def with_default(self, action: Action) -> Seccomp:
        """Return a copy with another default action.

        Args:
            action: the new default.

        Returns:
            The new spec.
        """
        return attrs.evolve(self, default_action=action)

    def with_unknown_action(self, action: Action | None) -> Seccomp:
        """Return a copy answering ``action`` above the highest syscall number it knows.

        Args:
            action: the action, or None for the default action (see
                :attr:`unknown_action`).

        Returns:
            The new spec.
        """
        return attrs.evolve(self, unknown_action=action)

    def effective_unknown_action(self) -> Action | None:
        """The action numbers above the filter's highest known syscall get, if not the default.

        Returns:
            :attr:`unknown_action` when the default action refuses calls and differs from
            it; else None.
        """
        if self.unknown_action is None or self.unknown_action == self.default_action:
            return None
        if self.default_action.kind in _PASSING_KINDS:
            return None
        return self.unknown_action

    def max_known_number(self, arch: Arch | str | None = None) -> int:
        """The highest syscall number the filter knows on ``arch``.

        Args:
            arch: the architecture (default: the filter's primary one).

        Returns:
            The maximum of the architecture's table and of the numeric rules.
        """
        target = self.target_arches()[0] if arch is None else Arch.parse(arch)
        numbers = [r.syscall for r in self.rules if isinstance(r.syscall, int)]
        return max([_table(target).max_nr, *numbers])

    def skipped_syscalls(self, arch: Arch | str | None = None) -> frozenset[str]:
        """The names of optional rules that ``arch`` has no syscall for (they are left out).

        Profiles name syscalls of many architectures (``arm_fadvise64_64``,
        ``s390_runtime_instr``...) and some newer than nscg's table; like libseccomp and
        runc, nscg skips a name an architecture does not have. This is the record of what
        was skipped.

        Args:
            arch: the architecture (default: the filter's primary one).

        Returns:
            The names.
        """
        target = self.target_arches()[0] if arch is None else Arch.parse(arch)
        table = _table(target).by_name
        return frozenset(
            r.syscall for r in self.rules if isinstance(r.syscall, str) and r.syscall not in table
        )

    def with_arches(self, *arches: Arch | str) -> Seccomp:
        """Return a copy accepting these architectures (the first is the primary).

        Args:
            *arches: the architectures; none means this machine's only.

        Returns:
            The new spec.

        Raises:
            SpecError: an architecture is unsupported.
        """
        return attrs.evolve(self, arches=arches)

    def add_rules(self, *rules: Rule) -> Seccomp:
        """Return a copy with these rules appended (they take precedence over older ones).

        Args:
            *rules: the rules.

        Returns:
            The new spec.
        """
        return attrs.evolve(self, rules=self.rules + rules)

    def with_rules(self, *rules: Rule) -> Seccomp:
        """Deprecated name of :meth:`add_rules` (it appends: verbs append, ``with_x`` replaces)."""
        _renamed("Seccomp.with_rules", "Seccomp.add_rules")
        return self.add_rules(*rules)

    def add(
        self,
        action: Action,
        *syscalls: str | int,
        when: ArgCmp | Iterable[ArgCmp] = (),
        optional: bool = False,
    ) -> Seccomp:
        """Return a copy with one rule per syscall: ``action`` if all of ``when`` hold.

        Args:
            action: the action.
            *syscalls: syscall names or numbers.
            when: comparisons that must all hold (default: none, the rule always applies).
            optional: skip, instead of failing, on architectures without the syscall.

        Returns:
            The new spec.

        Raises:
            SpecError: an unknown syscall name or a bad comparison.
        """
        cmps = _to_cmps(when)
        return self.add_rules(*(Rule(name, action, cmps, optional=optional) for name in syscalls))

    def allow(
        self, *syscalls: str | int, when: ArgCmp | Iterable[ArgCmp] = (), optional: bool = False
    ) -> Seccomp:
        """Return a copy that allows these syscalls (when ``when`` holds).

        Args:
            *syscalls: syscall names or numbers.
            when: comparisons that must all hold.
            optional: skip on architectures without the syscall.

        Returns:
            The new spec.

        Raises:
            SpecError: an unknown syscall name or a bad comparison.
        """
        return self.add(Action.ALLOW, *syscalls, when=when, optional=optional)

    def deny(
        self,
        *syscalls: str | int,
        errno: int = _errno.EPERM,
        when: ArgCmp | Iterable[ArgCmp] = (),
        optional: bool = False,
    ) -> Seccomp:
        """Return a copy in which these syscalls fail with ``errno`` (when ``when`` holds).

        Args:
            *syscalls: syscall names or numbers.
            errno: the error returned, 0..4095.
            when: comparisons that must all hold.
            optional: skip on architectures without the syscall.

        Returns:
            The new spec.

        Raises:
            SpecError: an unknown syscall name, bad errno or bad comparison.
        """
        return self.add(Action.errno(errno), *syscalls, when=when, optional=optional)

    def kill(
        self,
        *syscalls: str | int,
        when: ArgCmp | Iterable[ArgCmp] = (),
        thread: bool = False,
        optional: bool = False,
    ) -> Seccomp:
        """Return a copy in which these syscalls kill the process (or only the thread).

        Args:
            *syscalls: syscall names or numbers.
            when: comparisons that must all hold.
            thread: kill only the calling thread (``KILL_THREAD``).
            optional: skip on architectures without the syscall.

        Returns:
            The new spec.

        Raises:
            SpecError: an unknown syscall name or a bad comparison.
        """
        action = Action.KILL_THREAD if thread else Action.KILL_PROCESS
        return self.add(action, *syscalls, when=when, optional=optional)

    def trap(
        self,
        *syscalls: str | int,
        data: int = 0,
        when: ArgCmp | Iterable[ArgCmp] = (),
        optional: bool = False,
    ) -> Seccomp:
        """Return a copy in which these syscalls raise SIGSYS.

        Args:
            *syscalls: syscall names or numbers.
            data: 0..65535, reported in ``si_errno``.
            when: comparisons that must all hold.
            optional: skip on architectures without the syscall.

        Returns:
            The new spec.

        Raises:
            SpecError: an unknown syscall name or a bad comparison.
        """
        return self.add(Action.trap(data), *syscalls, when=when, optional=optional)

    def log(
        self, *syscalls: str | int, when: ArgCmp | Iterable[ArgCmp] = (), optional: bool = False
    ) -> Seccomp:
        """Return a copy in which these syscalls are allowed and logged (audit log).

        Args:
            *syscalls: syscall names or numbers.
            when: comparisons that must all hold.
            optional: skip on architectures without the syscall.

        Returns:
            The new spec.

        Raises:
            SpecError: an unknown syscall name or a bad comparison.
        """
        return self.add(Action.LOG, *syscalls, when=when, optional=optional)

    # ---- compilation and inspection

    def target_arches(
        self, arch: Arch | str | Iterable[Arch | str] | None = None
    ) -> tuple[Arch, ...]:
        """The architectures a compiled filter accepts, primary first.

        Args:
            arch: override the spec's ``arches`` (one or several).

        Returns:
            The architectures.
        """
        if arch is not None:
            arches = _to_arches(arch if not isinstance(arch, (Arch, str)) else (arch,))
        else:
            arches = self.arches
        return arches or (Arch.native(),)

    def compile(self, arch: Arch | str | Iterable[Arch | str] | None = None) -> bytes:
        """Compile to a classic BPF program for ``seccomp(SECCOMP_SET_MODE_FILTER)``.

        Args:
            arch: the architecture(s) to build for (default: the spec's ``arches``, or this
                machine's).

        Returns:
            The ``struct sock_filter`` array, native byte order, 8 bytes per instruction.

        Raises:
            SpecError: a rule names a syscall none of the architectures has, or the program
                would exceed 4096 instructions.
        """
        return _compile(self, self.target_arches(arch))

    def disassemble(self, arch: Arch | str | Iterable[Arch | str] | None = None) -> str:
        """Compile and return a readable listing (as ``seccomp-tools disasm`` prints).

        Args:
            arch: as for :meth:`compile`.

        Returns:
            The listing.

        Raises:
            SpecError: as for :meth:`compile`.
        """
        arches = self.target_arches(arch)
        return disassemble(_compile(self, arches), arches[0])

    def evaluate(
        self,
        nr: int | str,
        args: Sequence[int] = (),
        arch: Arch | str | int | None = None,
    ) -> Action:
        """Run the compiled filter in nscg's BPF interpreter for one syscall.

        Args:
            nr: the syscall number, or its name (resolved for ``arch``).
            args: up to six arguments (unsigned 64-bit; missing ones are 0).
            arch: the caller's architecture (an :class:`Arch`, or a raw ``AUDIT_ARCH_*``
                value to simulate a foreign one). Default: the filter's primary arch.

        Returns:
            The action the kernel would take.

        Raises:
            SpecError: the spec does not compile, or the name is unknown on ``arch``.
        """
        arches = self.target_arches()
        return run_filter(_compile(self, arches), nr, args, arches[0] if arch is None else arch)[0]

    def action_for(
        self, nr: int | str, args: Sequence[int] = (), arch: Arch | str | int | None = None
    ) -> Action:
        """The action the spec means for one syscall, computed from the rules (no BPF).

        This is the reference semantics the compiled program must agree with.

        Args:
            nr: the syscall number or name.
            args: the arguments.
            arch: the caller's architecture (as in :meth:`evaluate`).

        Returns:
            The action.
        """
        arches = self.target_arches()
        _, target = _resolve_arch(arches[0] if arch is None else arch)
        if target is None or target not in arches:
            return Action.KILL_PROCESS
        number = _resolve_nr(nr, target)
        if target is Arch.X86_64 and _X32_SYSCALL_BIT <= number < _U32:
            return Action.KILL_PROCESS
        if target.bits == 32:
            args = [a & _U32 for a in args]
        for rule in reversed(self.rules):
            if rule.number(target) == number and rule.matches(args):
                return rule.action
        unknown = self.effective_unknown_action()
        if unknown is not None and self.max_known_number(target) < number < _U32:
            return unknown
        return self.default_action


# --------------------------------------------------------------------------- OCI profiles


def _str_list(value: object, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SpecError(f"{what} must be a list of strings")
    return list(value)


def _opt_int(value: object, what: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise SpecError(f"{what} must be an integer")
    return value


def _filter_passes(
    entry: Mapping[str, object], caps: frozenset[str], arch: Arch, kernel: tuple[int, ...]
) -> bool:
    goarch = _GOARCH[arch]
    excludes = entry.get("excludes") or {}
    includes = entry.get("includes") or {}
    if not isinstance(excludes, Mapping) or not isinstance(includes, Mapping):
        raise SpecError("includes/excludes must be objects")
    if goarch & set(_str_list(excludes.get("arches"), "excludes.arches")):
        return False
    if {_norm_cap(c) for c in _str_list(excludes.get("caps"), "excludes.caps")} & caps:
        return False
    min_ex = excludes.get("minKernel")
    if min_ex and kernel >= _parse_version(str(min_ex)):
        return False
    inc_arches = _str_list(includes.get("arches"), "includes.arches")
    if inc_arches and not goarch & set(inc_arches):
        return False
    inc_caps = {_norm_cap(c) for c in _str_list(includes.get("caps"), "includes.caps")}
    if not inc_caps <= caps:
        return False
    min_in = includes.get("minKernel")
    return not (min_in and kernel < _parse_version(str(min_in)))


def _load_oci(
    cls: type[Seccomp],
    data: Mapping[str, object],
    *,
    capabilities: frozenset[str],
    arch: Arch,
    kernel: tuple[int, ...],
    multiarch: bool,
) -> Seccomp:
    if "defaultAction" not in data:
        raise SpecError("seccomp profile has no defaultAction")
    default = Action.from_oci(
        str(data["defaultAction"]), _opt_int(data.get("defaultErrnoRet"), "defaultErrnoRet")
    )
    arches: list[Arch] = [arch]
    if multiarch:
        names = _str_list(data.get("architectures"), "architectures")
        arch_map = data.get("archMap") or []
        if not isinstance(arch_map, list):
            raise SpecError("archMap must be a list")
        for item in arch_map:
            if not isinstance(item, Mapping):
                raise SpecError("archMap entries must be objects")
            try:
                main = Arch.parse(str(item.get("architecture", "")))
            except SpecError:
                continue
            if main is arch:
                names += _str_list(item.get("subArchitectures"), "subArchitectures")
        for name in names:
            try:
                extra = Arch.parse(name)
            except SpecError:
                continue  # x32, arm, mips...: not supported, calls from there are killed
            if extra not in arches:
                arches.append(extra)
    syscalls = data.get("syscalls") or []
    if not isinstance(syscalls, list):
        raise SpecError("syscalls must be a list")
    rules: list[Rule] = []
    for entry in syscalls:
        if not isinstance(entry, Mapping):
            raise SpecError("syscalls entries must be objects")
        names = _str_list(entry.get("names"), "names")
        if isinstance(entry.get("name"), str):
            names.append(str(entry["name"]))
        if not _filter_passes(entry, capabilities, arch, kernel):
            continue
        action = Action.from_oci(
            str(entry.get("action", "")), _opt_int(entry.get("errnoRet"), "errnoRet")
        )
        if action == default:
            continue
        raw_args = entry.get("args") or []
        if not isinstance(raw_args, list):
            raise SpecError("args must be a list")
        cmps: list[ArgCmp] = []
        for raw in raw_args:
            if not isinstance(raw, Mapping):
                raise SpecError("args entries must be objects")
            index = _opt_int(raw.get("index"), "args.index")
            value = _opt_int(raw.get("value"), "args.value") or 0
            value_two = _opt_int(raw.get("valueTwo"), "args.valueTwo") or 0
            op = CmpOp.from_oci(str(raw.get("op", "")))
            if index is None:
                raise SpecError("args entry without index")
            if op is CmpOp.MASKED_EQ:
                cmps.append(ArgCmp(index, op, value_two, value))
            else:
                cmps.append(ArgCmp(index, op, value))
        indexes = [c.index for c in cmps]
        groups = [(c,) for c in cmps] if len(set(indexes)) < len(indexes) else [tuple(cmps)]
        for name in names:
            for group in groups:
                rules.append(Rule(name, action, group, optional=True))
    return cls(default, tuple(rules), tuple(arches))


# --------------------------------------------------------------------------- compiler

_Cmps = tuple[ArgCmp, ...]
_ChainRules = tuple[tuple[int, _Cmps], ...]  # (return value, comparisons), newest first


class _Ret(NamedTuple):
    value: int


class _Chain(NamedTuple):
    default: int
    rules: _ChainRules


_Body = _Ret | _Chain


def _static(cmp: ArgCmp, hi_zero: bool) -> bool | None:
    """The comparison's result when it does not depend on the argument, else None."""
    v, op = cmp.value, cmp.op
    top = _U32 if hi_zero else _U64
    if op is CmpOp.MASKED_EQ:
        mask = cmp.mask & top
        if v & ~mask:
            return False
        return True if mask == 0 else None
    if op is CmpOp.EQ:
        return False if v > top else None
    if op is CmpOp.NE:
        return True if v > top else None
    if op is CmpOp.LT:
        return False if v == 0 else True if v > top else None
    if op is CmpOp.LE:
        return True if v >= top else None
    if op is CmpOp.GT:
        return False if v >= top else None
    return True if v == 0 else False if v > top else None  # GE


def _simplify(rule: Rule, hi_zero: bool) -> tuple[ArgCmp, ...] | None:
    """The comparisons that must be tested, or None if the rule can never match."""
    out: list[ArgCmp] = []
    for cmp in rule.args:
        result = _static(cmp, hi_zero)
        if result is False:
            return None
        if result is None:
            out.append(cmp)
    return tuple(out)


def _emit_cmp(
    asm: _bpf.Assembler, cmp: ArgCmp, passed: _bpf.Label, failed: _bpf.Label, hi_zero: bool
) -> None:
    """Emit code that goes to ``passed`` or ``failed``; ``passed`` is placed right after."""
    lo_off = 16 + 8 * cmp.index
    hi_off = lo_off + 4
    vh, vl = cmp.value >> 32, cmp.value & _U32
    next_ = _bpf.NEXT
    if cmp.op is CmpOp.MASKED_EQ:
        mh, ml = (0 if hi_zero else cmp.mask >> 32), cmp.mask & _U32
        halves = [(off, m, v) for off, m, v in ((hi_off, mh, vh), (lo_off, ml, vl)) if m]
        for i, (off, m, v) in enumerate(halves):
            asm.load(off)
            if m != _U32:
                asm.emit(_bpf.AND_K, m)
            last = i == len(halves) - 1
            asm.jump(_bpf.JEQ_K, v, passed if last else next_, failed)
        return
    op = cmp.op
    gt_hi, lt_hi = {
        CmpOp.EQ: (failed, failed),
        CmpOp.NE: (passed, passed),
        CmpOp.GT: (passed, failed),
        CmpOp.GE: (passed, failed),
        CmpOp.LT: (failed, passed),
        CmpOp.LE: (failed, passed),
    }[op]
    if not hi_zero:
        asm.load(hi_off)
        if gt_hi is lt_hi:
            asm.jump(_bpf.JEQ_K, vh, next_, gt_hi)
        elif vh == _U32:
            asm.jump(_bpf.JEQ_K, vh, next_, lt_hi)
        elif vh == 0:
            asm.jump(_bpf.JEQ_K, 0, next_, gt_hi)
        else:
            asm.jump(_bpf.JGT_K, vh, gt_hi, next_)
            asm.jump(_bpf.JEQ_K, vh, next_, lt_hi)
    # the upper halves are equal: decide on the lower ones (constant cases first)
    if (op is CmpOp.GE and vl == 0) or (op is CmpOp.LE and vl == _U32):
        return  # always passes: fall through to `passed`
    if (op is CmpOp.LT and vl == 0) or (op is CmpOp.GT and vl == _U32):
        asm.emit(_bpf.JA, 0, failed)
        return
    asm.load(lo_off)
    if op is CmpOp.EQ:
        asm.jump(_bpf.JEQ_K, vl, passed, failed)
    elif op is CmpOp.NE:
        asm.jump(_bpf.JEQ_K, vl, failed, passed)
    elif op is CmpOp.GT:
        asm.jump(_bpf.JGT_K, vl, passed, failed)
    elif op is CmpOp.GE:
        asm.jump(_bpf.JGE_K, vl, passed, failed)
    elif op is CmpOp.LT:
        asm.jump(_bpf.JGE_K, vl, failed, passed)
    else:  # LE
        asm.jump(_bpf.JGT_K, vl, failed, passed)


def _eq_set_key(rule: tuple[int, _Cmps]) -> tuple[int, int] | None:
    value, cmps = rule
    if len(cmps) == 1 and cmps[0].op is CmpOp.EQ:
        return value, cmps[0].index
    return None


def _emit_chain(
    asm: _bpf.Assembler,
    chain: _ChainRules,
    default: int,
    hi_zero: bool,
) -> None:
    """Emit the rules of one syscall (newest first), then ``ret default``."""
    i = 0
    while i < len(chain):
        value, cmps = chain[i]
        failed = _bpf.Label("fail")
        key = _eq_set_key(chain[i])
        j = i + 1
        if key is not None:
            while j < len(chain) and _eq_set_key(chain[j]) == key:
                j += 1
        if j - i > 1:
            # several `args[n] == v` rules with one action: test the upper half once per
            # distinct upper value, then each lower value.
            act = _bpf.Label("act")
            index = chain[i][1][0].index
            by_hi: dict[int, list[int]] = {}
            for _, (c,) in chain[i:j]:
                by_hi.setdefault(c.value >> 32, []).append(c.value & _U32)
            groups = list(by_hi.items())
            if hi_zero:
                groups = [(h, lows) for h, lows in groups if h == 0]
            for g, (hi, lows) in enumerate(groups):
                next_group = _bpf.Label("group") if g < len(groups) - 1 else failed
                if not hi_zero:
                    asm.load(16 + 8 * index + 4)
                    asm.jump(_bpf.JEQ_K, hi, _bpf.NEXT, next_group)
                asm.load(16 + 8 * index)
                for n, low in enumerate(lows):
                    asm.jump(_bpf.JEQ_K, low, act, next_group if n == len(lows) - 1 else _bpf.NEXT)
                if next_group is not failed:
                    asm.place(next_group)
            asm.place(act)
            asm.ret(value)
        else:
            for cmp in cmps:
                passed = _bpf.Label("pass")
                _emit_cmp(asm, cmp, passed, failed, hi_zero)
                asm.place(passed)
            asm.ret(value)
        asm.place(failed)
        i = j
    asm.ret(default)


def _syscall_bodies(spec: Seccomp, arch: Arch, arches: tuple[Arch, ...]) -> dict[int, _Body]:
    table = _table(arch).by_name
    hi_zero = arch.bits == 32
    default = spec.default_action.value
    per_nr: dict[int, list[tuple[int, _Cmps]]] = {}
    closed: set[int] = set()
    for rule in reversed(spec.rules):
        if isinstance(rule.syscall, int):
            _check_nr_for(rule.syscall, arch)
            nr: int | None = rule.syscall
        else:
            nr = table.get(rule.syscall)
        if nr is None:
            if not rule.optional and not any(rule.syscall in _table(a).by_name for a in arches):
                raise SpecError(
                    f"unknown syscall {rule.syscall!r} on "
                    f"{', '.join(a.value for a in arches)}; "
                    f"pass optional=True to skip it where it does not exist"
                )
            continue
        if nr in closed:
            continue  # an unconditional rule added later already decides
        cmps = _simplify(rule, hi_zero)
        if cmps is None:
            continue
        per_nr.setdefault(nr, []).append((rule.action.value, cmps))
        if not cmps:
            closed.add(nr)
    bodies: dict[int, _Body] = {}
    for nr, chain in per_nr.items():
        # a chain ending with an unconditional rule: that rule replaces the default
        local_default = chain.pop()[0] if not chain[-1][1] else default
        while chain and chain[-1][0] == local_default:
            chain.pop()
        if not chain:
            if local_default != default:
                bodies[nr] = _Ret(local_default)
        else:
            bodies[nr] = _Chain(local_default, tuple(chain))
    return bodies


def _intervals(
    bodies: dict[int, _Body],
    default: _Body,
    x32_guard: bool,
    last_known: int,
    unknown: _Body | None,
) -> list[tuple[int, _Body]]:
    """Cut 0..2**32-1 into intervals, each with the code deciding the numbers in it.

    Numbers without a body get ``default`` up to ``last_known`` and ``unknown`` (when not
    None) above it; on x86_64 the x32 numbers (and every number above) are killed; -1 (a
    call a tracer skipped) always gets the default, as with libseccomp.
    """
    points: list[tuple[int, _Body]] = []

    def gap(lo: int, hi: int) -> None:  # numbers lo..hi-1 have no body
        if lo >= hi:
            return
        if unknown is None or hi <= last_known + 1:
            points.append((lo, default))
        elif lo > last_known:
            points.append((lo, unknown))
        else:
            points.append((lo, default))
            points.append((last_known + 1, unknown))

    limit = _X32_SYSCALL_BIT if x32_guard else _U32
    cur = 0
    for nr in sorted(bodies):
        gap(cur, nr)
        points.append((nr, bodies[nr]))
        cur = nr + 1
    gap(cur, limit)
    if x32_guard:
        points.append((limit, _Ret(Action.KILL_PROCESS.value)))
    points.append((_U32, default))
    merged: list[tuple[int, _Body]] = []
    for start, body in points:
        if merged and merged[-1][1] == body:
            continue
        merged.append((start, body))
    return merged


#: Syscalls made most often by typical programs: they get short paths in the search tree.
_HOT: Final = {
    "read": 64,
    "write": 64,
    "futex": 32,
    "mmap": 32,
    **dict.fromkeys(
        [
            "close",
            "openat",
            "fstat",
            "newfstatat",
            "lseek",
            "munmap",
            "mprotect",
            "brk",
            "rt_sigprocmask",
            "rt_sigaction",
            "epoll_wait",
            "epoll_pwait",
            "poll",
            "ppoll",
            "recvfrom",
            "sendto",
            "recvmsg",
            "sendmsg",
            "getpid",
            "gettid",
            "clock_gettime",
            "nanosleep",
            "clock_nanosleep",
            "ioctl",
            "readv",
            "writev",
            "pread64",
            "pwrite64",
            "sched_yield",
            "madvise",
        ],
        8,
    ),
}


def _weights(intervals: list[tuple[int, _Body]], arch: Arch) -> list[int]:
    hot = {nr: _HOT[name] for name, nr in _table(arch).by_name.items() if name in _HOT}
    out = []
    for i, (start, _) in enumerate(intervals):
        end = intervals[i + 1][0] if i + 1 < len(intervals) else _U32 + 1
        weight = 1 + sum(w for nr, w in hot.items() if start <= nr < end)
        out.append(weight)
    return out


def _emit_tree(
    asm: _bpf.Assembler,
    intervals: list[tuple[int, _Body]],
    lo: int,
    hi: int,
    hi_zero: bool,
    prefix: list[int],
) -> None:
    """Emit a search tree over ``intervals[lo:hi]``, split by weight (hot syscalls high up)."""
    if hi - lo == 1:
        body = intervals[lo][1]
        if isinstance(body, _Ret):
            asm.ret(body.value)
        else:
            _emit_chain(asm, body.rules, body.default, hi_zero)
        return
    half = (prefix[lo] + prefix[hi]) / 2
    mid = min(range(lo + 1, hi), key=lambda m: (abs(prefix[m] - half), abs(2 * m - lo - hi)))
    right = _bpf.Label("right")
    asm.jump(_bpf.JGE_K, intervals[mid][0], right, _bpf.NEXT)
    _emit_tree(asm, intervals, lo, mid, hi_zero, prefix)
    asm.place(right)
    _emit_tree(asm, intervals, mid, hi, hi_zero, prefix)


@functools.lru_cache(maxsize=256)
def _compile(spec: Seccomp, arches: tuple[Arch, ...]) -> bytes:
    asm = _bpf.Assembler()
    asm.load(4)
    starts = [_bpf.Label(a.value) for a in arches]
    for arch, start in zip(arches, starts, strict=True):
        asm.jump(_bpf.JEQ_K, arch.audit_arch, start, _bpf.NEXT)
    asm.ret(Action.KILL_PROCESS.value)
    default = _Ret(spec.default_action.value)
    unknown_action = spec.effective_unknown_action()
    unknown = None if unknown_action is None else _Ret(unknown_action.value)
    for arch, start in zip(arches, starts, strict=True):
        asm.place(start)
        asm.load(0)
        intervals = _intervals(
            _syscall_bodies(spec, arch, arches),
            default,
            x32_guard=arch is Arch.X86_64,
            last_known=spec.max_known_number(arch),
            unknown=unknown,
        )
        prefix = [0]
        for weight in _weights(intervals, arch):
            prefix.append(prefix[-1] + weight)
        _emit_tree(asm, intervals, 0, len(intervals), arch.bits == 32, prefix)
    try:
        return asm.assemble()
    except _bpf.BpfError as exc:
        raise SpecError(f"seccomp filter too large: {exc}") from None


# --------------------------------------------------------------------------- running, listing


def _resolve_arch(arch: Arch | str | int) -> tuple[int, Arch | None]:
    if isinstance(arch, (Arch, str)):
        target = Arch.parse(arch)
        return target.audit_arch, target
    return arch & _U32, _ARCH_BY_AUDIT.get(arch & _U32)


def _resolve_nr(nr: int | str, arch: Arch | None) -> int:
    if isinstance(nr, str):
        if arch is None:
            raise SpecError(f"cannot resolve {nr!r} for a foreign architecture; pass a number")
        return syscall_number(nr, arch)
    return nr & _U32


def run_filter(
    program: bytes,
    nr: int | str,
    args: Sequence[int] = (),
    arch: Arch | str | int | None = None,
    ip: int = 0,
) -> tuple[Action, int]:
    """Run any seccomp BPF program (nscg's or libseccomp's) in nscg's interpreter.

    Args:
        program: the ``struct sock_filter`` array.
        nr: the syscall number, or a name resolved for ``arch``.
        args: up to six 64-bit arguments.
        arch: the caller's architecture, or a raw ``AUDIT_ARCH_*`` value (default: native).
        ip: the instruction pointer.

    Returns:
        The action and the number of BPF instructions executed.

    Raises:
        SpecError: the name is unknown, or the program is invalid.
    """
    audit, target = _resolve_arch(Arch.native() if arch is None else arch)
    number = _resolve_nr(nr, target)
    if len(args) > _MAX_ARGS:
        raise SpecError(f"a syscall has at most 6 arguments, got {len(args)}")
    try:
        value, steps = _bpf.run(program, _bpf.seccomp_data(number, audit, args, ip))
    except _bpf.BpfError as exc:
        raise SpecError(f"invalid BPF program: {exc}") from None
    return Action.from_value(value), steps


def _arch_name(audit: int) -> str | None:
    arch = _ARCH_BY_AUDIT.get(audit)
    return None if arch is None else "ARCH_" + arch.name


def _syscall_name_audit(audit: int, nr: int) -> str | None:
    arch = _ARCH_BY_AUDIT.get(audit)
    return None if arch is None else _table(arch).by_number.get(nr)


def disassemble(program: bytes, arch: Arch | str | None = None) -> str:
    """List a seccomp BPF program in the style of ``seccomp-tools disasm``.

    Args:
        program: the program (nscg's or any other).
        arch: the architecture used to name syscall numbers until the program's own arch
            test says otherwise (default: native).

    Returns:
        The listing.

    Raises:
        SpecError: the program is not a whole number of instructions.
    """
    target = Arch.native() if arch is None else Arch.parse(arch)
    try:
        return _bpf.disassemble(
            program,
            arch_name=_arch_name,
            syscall_name=_syscall_name_audit,
            ret_name=lambda value: str(Action.from_value(value)),
            arch=target.audit_arch,
        )
    except _bpf.BpfError as exc:
        raise SpecError(f"invalid BPF program: {exc}") from None


# --------------------------------------------------------------------------- kernel support

_SECCOMP_GET_ACTION_AVAIL: Final = 2


def seccomp_action_available(kind: ActionKind) -> bool:
    """Whether the running kernel supports a filter action (``SECCOMP_GET_ACTION_AVAIL``).

    Args:
        kind: the action.

    Returns:
        True if available; False if not, or if the kernel lacks the seccomp syscall
        (before Linux 3.17; the query itself needs 4.14).
    """
    from nscg import _host

    return _host.seccomp_action_available(int(kind))


def check_seccomp_supported() -> None:
    """Raise unless the kernel can load seccomp filters.

    Raises:
        UnsupportedError: ``/proc/self/status`` has no ``Seccomp:`` field (the kernel was
            built without CONFIG_SECCOMP), or filters are unavailable
            (CONFIG_SECCOMP_FILTER), or nscg has no table for this architecture.
    """
    from nscg import _host

    if _host.status_field("Seccomp") is None:
        raise UnsupportedError(
            "the kernel has no seccomp support (no 'Seccomp:' in /proc/self/status; "
            "it needs CONFIG_SECCOMP=y and CONFIG_SECCOMP_FILTER=y)",
            feature="seccomp",
        )
    Arch.native()
    if not seccomp_action_available(ActionKind.ALLOW):
        raise UnsupportedError(
            "the kernel does not accept seccomp filters (seccomp(SECCOMP_GET_ACTION_AVAIL) "
            "failed; it needs Linux >= 4.14 with CONFIG_SECCOMP_FILTER=y)",
            feature="seccomp.filter",
        )


def seccomp_supported() -> bool:
    """Whether the kernel can load seccomp filters built by nscg.

    Returns:
        True or False; :func:`check_seccomp_supported` says why not.
    """
    try:
        check_seccomp_supported()
    except UnsupportedError:
        return False
    return True
