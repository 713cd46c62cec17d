"""The compiler: a :class:`~nscg.seccomp.Seccomp` spec to classic BPF, and running and
listing a program (:func:`run_filter`, :func:`disassemble`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final, NamedTuple

from nscg.errors import SpecError
from nscg.seccomp import _bpf
from nscg.seccomp._rules import (
    _MAX_ARGS,
    _U32,
    _U64,
    _X32_SYSCALL_BIT,
    Action,
    ArgCmp,
    CmpOp,
    Rule,
    _check_nr_for,
)
from nscg.seccomp._tables import _ARCH_BY_AUDIT, Arch, _table, syscall_number

if TYPE_CHECKING:
    from nscg.seccomp._spec import Seccomp


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
