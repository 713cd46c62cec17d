"""The private classic-BPF layer: assembler (long jumps), interpreter, disassembler."""

from __future__ import annotations

import pytest

from nscg.seccomp import _bpf
from nscg.seccomp._bpf import Assembler, BpfError, Label


def _run(program: bytes, nr: int = 0, arch: int = 0, args: tuple[int, ...] = ()) -> int:
    return _bpf.run(program, _bpf.seccomp_data(nr, arch, args))[0]


def test_far_conditional_jumps_get_trampolines() -> None:
    """A jump over 300 instructions is routed through a JA trampoline and still works."""
    asm = Assembler()
    far = Label("far")
    asm.load(0)
    asm.jump(_bpf.JEQ_K, 7, far, _bpf.NEXT)
    for i in range(300):
        asm.emit(_bpf.BPF_LD | _bpf.BPF_IMM, i)
    asm.ret(1)
    asm.place(far)
    asm.ret(2)
    program = asm.assemble()
    insns = _bpf.decode(program)
    assert len(insns) == 305  # 304 + one trampoline
    assert any(i.code == _bpf.JA for i in insns)
    assert all(i.jt <= 255 and i.jf <= 255 for i in insns)
    assert _run(program, nr=7) == 2
    assert _run(program, nr=8) == 1


def test_both_branches_far() -> None:
    """Both targets far: two trampolines, both paths right."""
    asm = Assembler()
    a, b = Label("a"), Label("b")
    asm.load(0)
    asm.jump(_bpf.JGT_K, 5, a, b)
    for _ in range(260):
        asm.ret(9)
    asm.place(a)
    asm.ret(1)
    for _ in range(260):
        asm.ret(9)
    asm.place(b)
    asm.ret(2)
    program = asm.assemble()
    assert _run(program, nr=6) == 1
    assert _run(program, nr=5) == 2


def test_too_long_program_is_refused() -> None:
    """More than BPF_MAXINSNS instructions raise."""
    asm = Assembler()
    for _ in range(_bpf.BPF_MAXINSNS + 1):
        asm.ret(0)
    with pytest.raises(BpfError, match="more than 4096"):
        asm.assemble()


def test_backward_or_unplaced_labels_are_refused() -> None:
    """Labels must be placed once, ahead of the jump."""
    asm = Assembler()
    back = Label("back")
    asm.place(back)
    asm.load(0)
    asm.jump(_bpf.JEQ_K, 0, back, _bpf.NEXT)
    asm.ret(0)
    with pytest.raises(BpfError, match="not forward"):
        asm.assemble()
    asm2 = Assembler()
    asm2.jump(_bpf.JEQ_K, 0, Label("nowhere"), _bpf.NEXT)
    asm2.ret(0)
    with pytest.raises(BpfError, match="never placed"):
        asm2.assemble()


def _prog(*insns: tuple[int, int, int, int]) -> bytes:
    return b"".join(_bpf.INSN.pack(*i) for i in insns)


def test_interpreter_alu_memory_and_x() -> None:
    """ALU ops, scratch memory, X register, RET A."""
    program = _prog(
        (_bpf.LD_ABS, 0, 0, 16),  # A = args[0] (lo)
        (_bpf.BPF_ALU | _bpf.BPF_ADD | _bpf.BPF_K, 0, 0, 5),
        (_bpf.BPF_ST, 0, 0, 3),
        (_bpf.BPF_LDX | _bpf.BPF_IMM, 0, 0, 2),
        (_bpf.BPF_ALU | _bpf.BPF_MUL | _bpf.BPF_X, 0, 0, 0),
        (_bpf.BPF_ALU | _bpf.BPF_SUB | _bpf.BPF_K, 0, 0, 1),
        (_bpf.BPF_LDX | _bpf.BPF_MEM, 0, 0, 3),
        (_bpf.BPF_ALU | _bpf.BPF_XOR | _bpf.BPF_X, 0, 0, 0),
        (_bpf.BPF_RET | _bpf.BPF_A, 0, 0, 0),
    )
    a = 10
    assert _run(program, args=(a,)) == ((a + 5) * 2 - 1) ^ (a + 5)
    wrap = _prog(
        (_bpf.BPF_LD | _bpf.BPF_IMM, 0, 0, 0),
        (_bpf.BPF_ALU | _bpf.BPF_SUB | _bpf.BPF_K, 0, 0, 1),
        (_bpf.BPF_RET | _bpf.BPF_A, 0, 0, 0),
    )
    assert _run(wrap) == 0xFFFFFFFF
    assert _bpf.run(wrap, _bpf.seccomp_data(0, 0))[1] == 3


@pytest.mark.parametrize(
    "program, message",
    [
        (_prog((_bpf.LD_ABS, 0, 0, 2), (_bpf.RET_K, 0, 0, 0)), "bad load offset"),
        (_prog((_bpf.LD_ABS, 0, 0, 64), (_bpf.RET_K, 0, 0, 0)), "bad load offset"),
        (_prog((_bpf.LD_ABS, 0, 0, 0)), "ran off the end"),
        (_prog((_bpf.BPF_LD | _bpf.BPF_MEM, 0, 0, 16), (_bpf.RET_K, 0, 0, 0)), "scratch"),
        (b"\x00" * 7, "multiple of 8"),
    ],
)
def test_interpreter_refuses_bad_programs(program: bytes, message: str) -> None:
    """What the kernel would refuse, the interpreter refuses."""
    with pytest.raises(BpfError, match=message):
        _bpf.run(program, _bpf.seccomp_data(0, 0))


def test_disassembler_format() -> None:
    """seccomp-tools style lines with symbolic fields."""
    program = _prog(
        (_bpf.LD_ABS, 0, 0, 4),
        (_bpf.JEQ_K, 1, 0, 0xC000003E),
        (_bpf.RET_K, 0, 0, 0x80000000),
        (_bpf.LD_ABS, 0, 0, 0),
        (_bpf.JEQ_K, 0, 1, 39),
        (_bpf.RET_K, 0, 0, 0x7FFF0000),
        (_bpf.LD_ABS, 0, 0, 20),
        (_bpf.RET_K, 0, 0, 0x50001),
    )
    text = _bpf.disassemble(
        program,
        arch_name=lambda a: "ARCH_X86_64" if a == 0xC000003E else None,
        syscall_name=lambda a, n: "getpid" if n == 39 else None,
        ret_name=lambda v: f"R{v:x}",
    )
    lines = text.splitlines()
    assert lines[0].split() == ["line", "CODE", "JT", "JF", "K"]
    assert lines[2] == " 0000: 0x20 0x00 0x00 0x00000004  A = arch"
    assert lines[3].endswith("if (A == ARCH_X86_64) goto 0003")
    assert lines[6].endswith("if (A != getpid) goto 0006")
    assert lines[8].endswith("A = args[0] >> 32")
    assert lines[9].endswith("return R50001")


def test_bpf_errors_are_nscg_errors() -> None:
    """Whatever escapes the assembler or the interpreter is a typed nscg error."""
    from nscg.errors import NscgError, SpecError
    from nscg.seccomp._bpf import run

    assert issubclass(BpfError, SpecError) and issubclass(BpfError, NscgError)
    with pytest.raises(NscgError):
        run(b"\x00" * 7, b"\x00" * 64)
