"""Classic BPF for seccomp: an assembler with long-jump fixing, an interpreter, a disassembler.

Private to nscg; :mod:`nscg.seccomp` is the public face. Instructions are
``struct sock_filter {u16 code; u8 jt; u8 jf; u32 k}``, 8 bytes each, native (little-endian)
byte order. The instruction set accepted here is the subset the kernel allows in a seccomp
filter (``seccomp_check_filter()`` in ``kernel/seccomp.c``).
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable, Iterable, Sequence
from typing import Final, NamedTuple

from nscg.errors import SpecError

# --- instruction classes, sizes, modes, operations (linux/filter.h, linux/bpf_common.h) -----
BPF_LD: Final = 0x00
BPF_LDX: Final = 0x01
BPF_ST: Final = 0x02
BPF_STX: Final = 0x03
BPF_ALU: Final = 0x04
BPF_JMP: Final = 0x05
BPF_RET: Final = 0x06
BPF_MISC: Final = 0x07

BPF_W: Final = 0x00
BPF_IMM: Final = 0x00
BPF_ABS: Final = 0x20
BPF_MEM: Final = 0x60
BPF_LEN: Final = 0x80

BPF_ADD: Final = 0x00
BPF_SUB: Final = 0x10
BPF_MUL: Final = 0x20
BPF_DIV: Final = 0x30
BPF_OR: Final = 0x40
BPF_AND: Final = 0x50
BPF_LSH: Final = 0x60
BPF_RSH: Final = 0x70
BPF_NEG: Final = 0x80
BPF_MOD: Final = 0x90
BPF_XOR: Final = 0xA0

BPF_JA: Final = 0x00
BPF_JEQ: Final = 0x10
BPF_JGT: Final = 0x20
BPF_JGE: Final = 0x30
BPF_JSET: Final = 0x40

BPF_K: Final = 0x00
BPF_X: Final = 0x08
BPF_A: Final = 0x10

BPF_TAX: Final = 0x00
BPF_TXA: Final = 0x80

BPF_MAXINSNS: Final = 4096
BPF_MEMWORDS: Final = 16
SECCOMP_DATA_SIZE: Final = 64
MAX_JUMP: Final = 255

INSN: Final = struct.Struct("<HBBI")
SECCOMP_DATA: Final = struct.Struct("<IIQ6Q")
U32: Final = 0xFFFFFFFF

LD_ABS: Final = BPF_LD | BPF_W | BPF_ABS
RET_K: Final = BPF_RET | BPF_K
JA: Final = BPF_JMP | BPF_JA
JEQ_K: Final = BPF_JMP | BPF_JEQ | BPF_K
JGT_K: Final = BPF_JMP | BPF_JGT | BPF_K
JGE_K: Final = BPF_JMP | BPF_JGE | BPF_K
JSET_K: Final = BPF_JMP | BPF_JSET | BPF_K
AND_K: Final = BPF_ALU | BPF_AND | BPF_K


class BpfError(SpecError):
    """A BPF program is malformed, or cannot be assembled.

    A :class:`~nscg.SpecError` (so an :class:`~nscg.NscgError`): nscg's callers wrap it with
    context, and one that escapes is still a typed error.
    """


class Label:
    """A position in a program under construction; jumps refer to labels, never to offsets."""

    __slots__ = ("name",)

    def __init__(self, name: str = "") -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Label({self.name!r})"


#: Jump target meaning "the next instruction" (offset 0).
NEXT: Final = Label("next")


class Op:
    """One instruction under construction; ``jt``/``jf`` are labels (``NEXT`` = fall through).

    For ``JA`` the target is ``jt``. Other instructions ignore ``jt``/``jf``.
    """

    __slots__ = ("code", "jf", "jt", "k")

    def __init__(
        self, code: int, k: int = 0, jt: Label | None = None, jf: Label | None = None
    ) -> None:
        self.code = code
        self.k = k & U32
        self.jt = jt
        self.jf = jf


class _Node:
    __slots__ = ("code", "jf", "jt", "k")

    def __init__(self, code: int, k: int) -> None:
        self.code = code
        self.k = k
        self.jt: _Node | None = None
        self.jf: _Node | None = None


def is_cond_jump(code: int) -> bool:
    """Whether ``code`` is a conditional jump (has jt/jf offsets).

    Args:
        code: the instruction code.

    Returns:
        True for JEQ/JGT/JGE/JSET.
    """
    return code & 0x07 == BPF_JMP and code & 0xF0 != BPF_JA


class Assembler:
    """Collects instructions and labels, then lays them out with 8-bit jumps fixed.

    Conditional jumps can only go 255 instructions forward; when a target is farther, a
    ``JA`` trampoline (32-bit offset) is inserted right after the jump, and the layout is
    recomputed until every jump fits.
    """

    def __init__(self) -> None:
        self._items: list[Op | Label] = []

    def emit(self, code: int, k: int = 0, jt: Label = NEXT, jf: Label = NEXT) -> None:
        """Append an instruction.

        Args:
            code: the BPF code.
            k: the constant.
            jt: the target when the condition holds (or of a ``JA``).
            jf: the target when it does not.
        """
        self._items.append(Op(code, k, jt, jf))

    def ret(self, value: int) -> None:
        """Append ``ret #value``.

        Args:
            value: the SECCOMP_RET_* value.
        """
        self._items.append(Op(RET_K, value))

    def load(self, offset: int) -> None:
        """Append ``ld [offset]`` (a 32-bit word of seccomp_data).

        Args:
            offset: byte offset into struct seccomp_data.
        """
        self._items.append(Op(LD_ABS, offset))

    def jump(self, code: int, k: int, jt: Label, jf: Label) -> None:
        """Append a conditional jump.

        Args:
            code: JEQ_K, JGT_K, JGE_K or JSET_K.
            k: the constant compared with A.
            jt: where to go when the condition holds.
            jf: where to go when it does not.
        """
        self._items.append(Op(code, k, jt, jf))

    def place(self, label: Label) -> None:
        """Bind ``label`` to the next instruction.

        Args:
            label: a label not placed before.
        """
        self._items.append(label)

    def __len__(self) -> int:
        return sum(1 for item in self._items if isinstance(item, Op))

    def assemble(self, max_insns: int = BPF_MAXINSNS) -> bytes:
        """Resolve labels, insert trampolines and encode the program.

        Args:
            max_insns: the largest program accepted.

        Returns:
            The program, 8 bytes per instruction.

        Raises:
            BpfError: a jump goes backwards or nowhere, or the program is too long.
        """
        nodes: list[_Node] = []
        ops: list[tuple[Op, _Node]] = []
        pending: list[Label] = []
        where: dict[int, int] = {}
        for item in self._items:
            if isinstance(item, Label):
                pending.append(item)
                continue
            node = _Node(item.code, item.k)
            for label in pending:
                if id(label) in where:
                    raise BpfError(f"label {label!r} placed twice")
                where[id(label)] = len(nodes)
            pending.clear()
            nodes.append(node)
            ops.append((item, node))
        if pending:
            raise BpfError(f"label {pending[0]!r} placed after the last instruction")

        def target(label: Label | None, index: int) -> _Node:
            if label is None or label is NEXT:
                pos = index + 1
            else:
                if id(label) not in where:
                    raise BpfError(f"label {label!r} never placed")
                pos = where[id(label)]
            if pos <= index or pos >= len(nodes):
                raise BpfError(f"jump from {index} to {pos} is not forward within the program")
            return nodes[pos]

        for index, (op, node) in enumerate(ops):
            if is_cond_jump(op.code):
                node.jt = target(op.jt, index)
                node.jf = target(op.jf, index)
            elif op.code == JA:
                node.jt = target(op.jt, index)
        nodes = _fix_long_jumps(nodes, max_insns)
        return _encode(nodes)


def _fix_long_jumps(nodes: list[_Node], max_insns: int) -> list[_Node]:
    while True:
        if len(nodes) > max_insns:
            raise BpfError(f"program has {len(nodes)} instructions, more than {max_insns}")
        index = {id(node): i for i, node in enumerate(nodes)}
        out: list[_Node] = []
        changed = False
        for i, node in enumerate(nodes):
            out.append(node)
            if not is_cond_jump(node.code):
                continue
            assert node.jt is not None and node.jf is not None
            far_t = index[id(node.jt)] - i - 1 > MAX_JUMP
            far_f = index[id(node.jf)] - i - 1 > MAX_JUMP
            if far_t:
                tramp = _Node(JA, 0)
                tramp.jt = node.jt
                node.jt = tramp
                out.append(tramp)
                changed = True
            if far_f:
                tramp = _Node(JA, 0)
                tramp.jt = node.jf
                node.jf = tramp
                out.append(tramp)
                changed = True
        nodes = out
        if not changed:
            return nodes


def _encode(nodes: list[_Node]) -> bytes:
    index = {id(node): i for i, node in enumerate(nodes)}
    out = bytearray()
    for i, node in enumerate(nodes):
        jt = jf = 0
        k = node.k
        if is_cond_jump(node.code):
            assert node.jt is not None and node.jf is not None
            jt = index[id(node.jt)] - i - 1
            jf = index[id(node.jf)] - i - 1
        elif node.code == JA:
            assert node.jt is not None
            k = index[id(node.jt)] - i - 1
        out += INSN.pack(node.code, jt, jf, k)
    return bytes(out)


class Insn(NamedTuple):
    """A decoded instruction."""

    code: int
    jt: int
    jf: int
    k: int


@functools.lru_cache(maxsize=64)
def decode(program: bytes) -> tuple[Insn, ...]:
    """Decode a program into instructions.

    Args:
        program: ``struct sock_filter`` array, native byte order.

    Returns:
        The instructions.

    Raises:
        BpfError: the length is not a multiple of 8, or the program is empty or too long.
    """
    if len(program) % INSN.size or not program:
        raise BpfError(f"program length {len(program)} is not a positive multiple of 8")
    if len(program) // INSN.size > BPF_MAXINSNS:
        raise BpfError(f"program has more than {BPF_MAXINSNS} instructions")
    return tuple(Insn(*fields) for fields in INSN.iter_unpack(program))


def seccomp_data(nr: int, arch: int, args: Sequence[int] = (), ip: int = 0) -> bytes:
    """Pack a ``struct seccomp_data``.

    Args:
        nr: the syscall number (taken modulo 2**32, as the kernel's ``int`` would be).
        arch: the AUDIT_ARCH_* value.
        args: up to six 64-bit arguments (missing ones are 0).
        ip: the instruction pointer.

    Returns:
        64 bytes.
    """
    full = [a & 0xFFFFFFFFFFFFFFFF for a in args] + [0] * (6 - len(args))
    return SECCOMP_DATA.pack(nr & U32, arch & U32, ip & 0xFFFFFFFFFFFFFFFF, *full)


def run(program: bytes, data: bytes) -> tuple[int, int]:
    """Run a seccomp BPF program on one ``struct seccomp_data``.

    Args:
        program: the program.
        data: 64 bytes of seccomp_data (see :func:`seccomp_data`).

    Returns:
        The value returned and the number of instructions executed.

    Raises:
        BpfError: the program does something the kernel would have refused at load time
            (bad load offset, backward or out-of-range jump, unknown instruction) or runs off
            its end.
    """
    insns = decode(program)
    words = struct.unpack("<16I", data)
    a = x = 0
    mem = [0] * BPF_MEMWORDS
    pc = 0
    steps = 0
    n = len(insns)
    while True:
        if pc >= n:
            raise BpfError("ran off the end of the program")
        code, jt, jf, k = insns[pc]
        steps += 1
        pc += 1
        cls = code & 0x07
        if cls == BPF_LD:
            if code == LD_ABS:
                if k % 4 or k >= SECCOMP_DATA_SIZE:
                    raise BpfError(f"bad load offset {k} at {pc - 1}")
                a = words[k // 4]
            elif code == BPF_LD | BPF_W | BPF_LEN:
                a = SECCOMP_DATA_SIZE
            elif code == BPF_LD | BPF_IMM:
                a = k
            elif code == BPF_LD | BPF_MEM:
                a = mem[_memidx(k)]
            else:
                raise BpfError(f"instruction 0x{code:02x} not allowed in seccomp")
        elif cls == BPF_LDX:
            if code == BPF_LDX | BPF_W | BPF_LEN:
                x = SECCOMP_DATA_SIZE
            elif code == BPF_LDX | BPF_IMM:
                x = k
            elif code == BPF_LDX | BPF_MEM:
                x = mem[_memidx(k)]
            else:
                raise BpfError(f"instruction 0x{code:02x} not allowed in seccomp")
        elif cls == BPF_ST:
            mem[_memidx(k)] = a
        elif cls == BPF_STX:
            mem[_memidx(k)] = x
        elif cls == BPF_ALU:
            a = _alu(code, a, x if code & BPF_X else k)
        elif cls == BPF_JMP:
            op = code & 0xF0
            if op == BPF_JA:
                pc += k
            else:
                operand = x if code & BPF_X else k
                if op == BPF_JEQ:
                    cond = a == operand
                elif op == BPF_JGT:
                    cond = a > operand
                elif op == BPF_JGE:
                    cond = a >= operand
                elif op == BPF_JSET:
                    cond = bool(a & operand)
                else:
                    raise BpfError(f"bad jump 0x{code:02x}")
                pc += jt if cond else jf
        elif cls == BPF_RET:
            return (a if code & BPF_A else k), steps
        elif code == BPF_MISC | BPF_TAX:
            x = a
        elif code == BPF_MISC | BPF_TXA:
            a = x
        else:
            raise BpfError(f"instruction 0x{code:02x} not allowed in seccomp")


def _memidx(k: int) -> int:
    if k >= BPF_MEMWORDS:
        raise BpfError(f"scratch memory index {k} out of range")
    return k


def _alu(code: int, a: int, operand: int) -> int:
    op = code & 0xF0
    if op == BPF_ADD:
        return (a + operand) & U32
    if op == BPF_SUB:
        return (a - operand) & U32
    if op == BPF_MUL:
        return (a * operand) & U32
    if op == BPF_DIV:
        return a // operand if operand else 0
    if op == BPF_MOD:
        return a % operand if operand else 0
    if op == BPF_OR:
        return a | operand
    if op == BPF_AND:
        return a & operand
    if op == BPF_XOR:
        return a ^ operand
    if op == BPF_LSH:
        return (a << operand) & U32 if operand < 32 else 0
    if op == BPF_RSH:
        return a >> operand if operand < 32 else 0
    if op == BPF_NEG:
        return (-a) & U32
    raise BpfError(f"bad ALU instruction 0x{code:02x}")


_ALU_TEXT: Final = {
    BPF_ADD: "+=",
    BPF_SUB: "-=",
    BPF_MUL: "*=",
    BPF_DIV: "/=",
    BPF_MOD: "%=",
    BPF_OR: "|=",
    BPF_AND: "&=",
    BPF_XOR: "^=",
    BPF_LSH: "<<=",
    BPF_RSH: ">>=",
}

_JUMP_TEXT: Final = {
    BPF_JEQ: ("==", "!="),
    BPF_JGT: (">", "<="),
    BPF_JGE: (">=", "<"),
    BPF_JSET: ("&", "!&"),
}


def _field(k: int) -> str:
    if k == 0:
        return "sys_number"
    if k == 4:
        return "arch"
    if k == 8:
        return "instruction_pointer"
    if k == 12:
        return "instruction_pointer >> 32"
    if 16 <= k < SECCOMP_DATA_SIZE and k % 4 == 0:
        index, half = divmod(k - 16, 8)
        return f"args[{index}]" + (" >> 32" if half else "")
    return f"data[{k}]"


def disassemble(
    program: bytes,
    *,
    arch_name: Callable[[int], str | None],
    syscall_name: Callable[[int, int], str | None],
    ret_name: Callable[[int], str],
    arch: int | None = None,
) -> str:
    """Render a program the way ``seccomp-tools disasm`` does.

    Args:
        program: the program.
        arch_name: AUDIT_ARCH value → ``"ARCH_X86_64"`` (or None if unknown).
        syscall_name: (AUDIT_ARCH, nr) → syscall name (or None if unknown).
        ret_name: SECCOMP_RET_* value → ``"ALLOW"``, ``"ERRNO(1)"``...
        arch: the architecture to name syscalls with before any arch test is seen.

    Returns:
        The listing, one line per instruction, with a header.
    """
    insns = decode(program)
    lines = [" line  CODE  JT   JF      K", "================================="]
    current_arch = arch
    arch_at: dict[int, int] = {}
    a_holds: str | None = None
    falls = True
    incoming: dict[int, list[str | None]] = {}
    for pc, (code, jt, jf, k) in enumerate(insns):
        if pc in arch_at:
            current_arch = arch_at[pc]
        # what A holds here: known only if every way in agrees (all jumps go forward)
        states = incoming.pop(pc, [])
        if falls:
            states.append(a_holds)
        a_holds = states[0] if states and all(st == states[0] for st in states) else None
        falls = (code & 0x07) not in (BPF_JMP, BPF_RET)
        cls = code & 0x07
        text: str
        if code == LD_ABS:
            a_holds = _field(k)
            text = f"A = {a_holds}"
        elif cls == BPF_LD:
            a_holds = None
            text = (
                f"A = {k:#x}"
                if code == BPF_LD | BPF_IMM
                else f"A = mem[{k}]"
                if code == BPF_LD | BPF_MEM
                else "A = sizeof(seccomp_data)"
            )
        elif cls == BPF_LDX:
            text = (
                f"X = {k:#x}"
                if code == BPF_LDX | BPF_IMM
                else f"X = mem[{k}]"
                if code == BPF_LDX | BPF_MEM
                else "X = sizeof(seccomp_data)"
            )
        elif cls == BPF_ST:
            text = f"mem[{k}] = A"
        elif cls == BPF_STX:
            text = f"mem[{k}] = X"
        elif cls == BPF_ALU:
            op = code & 0xF0
            if a_holds is not None:
                a_holds = f"({a_holds})" if op != BPF_AND else a_holds
            if op == BPF_NEG:
                text = "A = -A"
            else:
                operand = "X" if code & BPF_X else f"{k:#x}"
                text = f"A {_ALU_TEXT.get(op, '?=')} {operand}"
        elif cls == BPF_JMP:
            op = code & 0xF0
            if op == BPF_JA:
                incoming.setdefault(pc + 1 + k, []).append(a_holds)
                text = f"goto {pc + 1 + k:04d}"
            else:
                if code & BPF_X:
                    value = "X"
                elif a_holds == "arch":
                    value = arch_name(k) or f"{k:#x}"
                    arch_at.setdefault(pc + 1 + jt, k)
                elif a_holds == "sys_number" and current_arch is not None:
                    value = syscall_name(current_arch, k) or f"{k:#x}"
                else:
                    value = f"{k:#x}"
                yes, no = _JUMP_TEXT.get(op, ("?", "!?"))
                t, f = pc + 1 + jt, pc + 1 + jf
                incoming.setdefault(t, []).append(a_holds)
                incoming.setdefault(f, []).append(a_holds)
                if jt == 0:
                    text = f"if (A {no} {value}) goto {f:04d}"
                elif jf == 0:
                    text = f"if (A {yes} {value}) goto {t:04d}"
                else:
                    text = f"if (A {yes} {value}) goto {t:04d} else goto {f:04d}"
        elif cls == BPF_RET:
            text = "return A" if code & BPF_A else f"return {ret_name(k)}"
        elif code == BPF_MISC | BPF_TAX:
            text = "X = A"
        elif code == BPF_MISC | BPF_TXA:
            a_holds = None
            text = "A = X"
        else:
            text = "???"
        lines.append(f" {pc:04d}: 0x{code:02x} 0x{jt:02x} 0x{jf:02x} 0x{k:08x}  {text}")
    return "\n".join(lines) + "\n"


def count_steps(program: bytes, datas: Iterable[bytes]) -> list[int]:
    """Run a program on several inputs and return the instruction counts.

    Args:
        program: the program.
        datas: packed seccomp_data values.

    Returns:
        The number of instructions executed for each input.
    """
    return [run(program, data)[1] for data in datas]
