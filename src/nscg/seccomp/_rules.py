"""The rule vocabulary of a filter: actions, argument comparisons, rules."""

from __future__ import annotations

import enum
import errno as _errno
from collections.abc import Iterable, Sequence
from typing import ClassVar, Final

import attrs

from nscg.errors import SpecError
from nscg.seccomp._tables import Arch, _all_names, _table

_U32: Final = 0xFFFFFFFF
_U64: Final = 0xFFFFFFFFFFFFFFFF
_X32_SYSCALL_BIT: Final = 0x40000000
_MAX_ERRNO: Final = 4095
_MAX_ARGS: Final = 6
#: The largest syscall number a rule may name: the kernel reads ``nr`` as a signed int, and
#: numbers with the top bit set are never a system call (-1 marks one a tracer skipped).
_MAX_RULE_NR: Final = 0x7FFFFFFF


# --------------------------------------------------------------------------- actions


class ActionKind(enum.IntEnum):
    """The action part of a seccomp return value (``SECCOMP_RET_*``, linux/seccomp.h)."""

    __module__ = "nscg.seccomp"  # documented and pickled under its public path

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

    __module__ = "nscg.seccomp"  # documented and pickled under its public path

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

    __module__ = "nscg.seccomp"  # documented and pickled under its public path

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

    __module__ = "nscg.seccomp"  # documented and pickled under its public path

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

    __module__ = "nscg.seccomp"  # documented and pickled under its public path

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

    __module__ = "nscg.seccomp"  # documented and pickled under its public path

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
