"""nscg.seccomp: numeric syscalls in rules, ENOSYS above the known numbers, skipped names.

Every case runs the compiled program in nscg's BPF interpreter and checks it against the
spec's reference semantics (``Seccomp.action_for``); the real kernel is exercised by
tests/integration/test_seccomp_docker.py.
"""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nscg.errors import NscgError, SpecError, SyscallError, UnsupportedError
from nscg.seccomp import Action, Arch, Arg, Rule, Seccomp, run_filter, syscall_number
from nscg.seccomp import _tables as sc

X86 = Arch.X86_64
U32 = 0xFFFFFFFF
ENOSYS = Action.errno(errno.ENOSYS)
EPERM = Action.errno(errno.EPERM)


def _both(spec: Seccomp, nr: int, arch: Arch | int, args: list[int] | None = None) -> Action:
    """The compiled filter's answer, checked against the reference semantics."""
    got = run_filter(spec.compile(), nr, args or [], arch)[0]
    assert got == spec.action_for(nr, args or [], arch), (hex(nr), arch)
    return got


@pytest.mark.parametrize("arch", list(Arch), ids=lambda a: a.value)
def test_enosys_above_the_table(arch: Arch) -> None:
    """Deny-by-default filters answer ENOSYS above the table's highest number, EPERM below."""
    spec = Seccomp.deny_all().allow("read").with_arches(arch)
    top = sc.max_syscall_number(arch)
    assert spec.max_known_number() == top
    assert _both(spec, syscall_number("read", arch), arch) == Action.ALLOW
    assert _both(spec, top, arch) == EPERM  # known, not allowed
    assert _both(spec, top + 1, arch) == ENOSYS
    assert _both(spec, 1000, arch) == ENOSYS
    assert _both(spec, 0x3FFFFFFF, arch) == ENOSYS
    assert _both(spec, U32, arch) == EPERM  # -1: a call a tracer skipped gets the default
    if arch is X86:  # x32 numbers and everything above stay killed
        for nr in (0x40000000, 0x40000000 | 1, 0x40000000 | 1000, 0x7FFFFFFF, 0x80000000):
            assert _both(spec, nr, arch) == Action.KILL_PROCESS
    else:  # no x32 there: large numbers are simply unknown
        assert _both(spec, 0x40000001, arch) == ENOSYS
        assert _both(spec, 0x80000000, arch) == ENOSYS


def test_foreign_arches_stay_killed() -> None:
    """The stub sits after the arch check: a foreign arch's unknown number still kills."""
    spec = Seccomp.deny_all().with_arches(X86)
    assert _both(spec, 1000, Arch.I386.audit_arch) == Action.KILL_PROCESS
    assert _both(spec, 1000, Arch.AARCH64.audit_arch) == Action.KILL_PROCESS
    assert _both(spec, 1000, 0x1234) == Action.KILL_PROCESS
    multi = Seccomp.deny_all().with_arches(X86, Arch.I386)
    assert _both(multi, sc.max_syscall_number(Arch.I386) + 1, Arch.I386) == ENOSYS
    assert _both(multi, 0x40000001, Arch.I386) == ENOSYS  # i386 has no x32 bit


def test_stub_only_under_a_refusing_default() -> None:
    """ALLOW/LOG/TRACE/USER_NOTIF defaults let unknown numbers through; KILL/TRAP get ENOSYS."""
    for default in (Action.ALLOW, Action.LOG, Action.trace(3), Action.USER_NOTIF):
        spec = Seccomp(default).with_arches(X86)
        assert spec.effective_unknown_action() is None
        assert _both(spec, 1000, X86) == default
    for default in (Action.KILL_PROCESS, Action.KILL_THREAD, Action.trap(2), Action.errno(13)):
        spec = Seccomp(default).with_arches(X86)
        assert spec.effective_unknown_action() == ENOSYS
        assert _both(spec, 1000, X86) == ENOSYS
        assert _both(spec, 0, X86) == default
    off = Seccomp.deny_all().with_arches(X86).with_unknown_action(None)
    assert _both(off, 1000, X86) == EPERM
    custom = Seccomp.deny_all().with_arches(X86).with_unknown_action(Action.KILL_PROCESS)
    assert _both(custom, 1000, X86) == Action.KILL_PROCESS
    same = Seccomp.deny_all(errno.ENOSYS).with_arches(X86)
    assert same.effective_unknown_action() is None  # nothing to add


def test_stub_costs_few_instructions() -> None:
    """Docker's profile with the stub: unknown numbers and common calls stay short."""
    spec = Seccomp.docker_default(arch=X86, kernel="6.18")
    program = spec.compile()
    plain = spec.with_unknown_action(None).compile()
    assert len(program) - len(plain) <= 3 * 8
    for nr in (1000, sc.max_syscall_number(X86) + 1):
        action, steps = run_filter(program, nr, (), X86)
        assert action == ENOSYS and steps <= 12, (nr, steps)


def test_numeric_rules() -> None:
    """An int names that number; the filter then knows up to it."""
    spec = Seccomp.deny_all().allow(1000).allow(syscall_number("getpid", X86)).with_arches(X86)
    assert spec.max_known_number() == 1000
    assert _both(spec, 1000, X86) == Action.ALLOW
    assert _both(spec, 999, X86) == EPERM  # below the highest number the filter knows
    assert _both(spec, 1001, X86) == ENOSYS
    assert _both(spec, syscall_number("getpid", X86), X86) == Action.ALLOW
    # a conditional numeric rule, and a numeric deny that overrides a named allow
    spec2 = (
        Seccomp.allow_all()
        .deny(600, errno=errno.EACCES, when=Arg(0).eq(7))
        .deny(39, errno=errno.EDOM)
        .with_arches(X86)
    )
    assert _both(spec2, 600, X86, [7]) == Action.errno(errno.EACCES)
    assert _both(spec2, 600, X86, [8]) == Action.ALLOW
    assert _both(spec2, syscall_number("getpid", X86), X86) == Action.errno(errno.EDOM)
    assert str(Rule(1000, Action.ALLOW)) == "1000 -> ALLOW"
    # a number applies on every architecture the filter accepts
    arm = Seccomp.deny_all().allow(0x40000001).with_arches(Arch.AARCH64)
    assert _both(arm, 0x40000001, Arch.AARCH64) == Action.ALLOW
    assert _both(arm, 0x40000000, Arch.AARCH64) == EPERM


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (-1, "out of range"),
        (-5, "out of range"),
        (0x80000000, "out of range"),
        (1 << 40, "out of range"),
        (True, "non-empty name or an int"),
        (1.0, "non-empty name or an int"),
        ("", "non-empty name or an int"),
        ("123", "pass a number as an int"),
        ("no_such_call", "unknown syscall"),
    ],
)
def test_bad_syscalls_are_spec_errors(value: object, match: str) -> None:
    """Negative, too large, bools, floats and digit strings: SpecError before anything runs."""
    with pytest.raises(SpecError, match=match):
        Seccomp.deny_all().allow(value)  # type: ignore[arg-type]


def test_x32_numbers_refused_on_x86_64() -> None:
    """A number with the x32 bit cannot be allowed on x86_64: those calls are killed."""
    spec = Seccomp.deny_all().allow(0x40000000 | 1)
    with pytest.raises(SpecError, match="x32"):
        spec.compile(X86)
    assert spec.compile(Arch.AARCH64)  # fine where there is no x32


_ACTS = st.sampled_from([Action.ALLOW, EPERM, ENOSYS, Action.KILL_PROCESS, Action.trap(1)])
_NRS = st.one_of(
    st.integers(0, 600),
    st.sampled_from([0x3FFFFFFF, 0x40000000, 0x7FFFFFFF, 0x80000000, U32 - 1, U32]),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    default=_ACTS,
    unknown=st.one_of(st.none(), _ACTS),
    numbers=st.lists(st.integers(0, 700), max_size=6),
    names=st.lists(st.sampled_from(["read", "getpid", "mseal", "fchmodat2"]), max_size=3),
    acts=st.lists(_ACTS, min_size=9, max_size=9),
    arch=st.sampled_from(list(Arch)),
    calls=st.lists(_NRS, min_size=5, max_size=25),
)
def test_numbers_compiled_match_reference(
    default: Action,
    unknown: Action | None,
    numbers: list[int],
    names: list[str],
    acts: list[Action],
    arch: Arch,
    calls: list[int],
) -> None:
    """Numeric and named rules, any default and stub: BPF == Seccomp.action_for."""
    rules = [Rule(n, acts[i % 9]) for i, n in enumerate(numbers)]
    rules += [Rule(n, acts[(i + 4) % 9]) for i, n in enumerate(names)]
    spec = Seccomp(default, tuple(rules), (arch,), unknown)
    program = spec.compile()
    for nr in calls + numbers + [spec.max_known_number() + d for d in (0, 1)]:
        assert run_filter(program, nr, [], arch)[0] == spec.action_for(nr, [], arch), hex(nr)


def test_docker_profile_regains_new_syscalls() -> None:
    """Every name the profile allows that the 6.1 tables lacked is allowed again."""
    names = [
        "cachestat",
        "fchmodat2",
        "futex_wake",
        "futex_wait",
        "futex_requeue",
        "map_shadow_stack",
        "mseal",
        "listmount",
        "statmount",
    ]
    lsm = ["lsm_get_self_attr", "lsm_set_self_attr", "lsm_list_modules"]  # CAP_SYS_ADMIN only
    for arch in (X86, Arch.AARCH64):
        spec = Seccomp.docker_default(arch=arch, kernel="6.18")
        admin = Seccomp.docker_default(["CAP_SYS_ADMIN"], arch=arch, kernel="6.18")
        for name in names:
            assert spec.evaluate(name) == Action.ALLOW, (arch, name)
        for name in lsm:
            assert spec.evaluate(name) == EPERM, (arch, name)
            assert admin.evaluate(name) == Action.ALLOW, (arch, name)
    assert Seccomp.docker_default(arch=X86).evaluate("uretprobe") == Action.ALLOW


def test_skipped_syscalls_are_recorded() -> None:
    """Names the architecture lacks are skipped and listed, never silently allowed."""
    spec = Seccomp.docker_default(arch=X86, kernel="6.18")
    skipped = spec.skipped_syscalls()
    assert {"socketcall", "_llseek", "mmap2", "fstat64"} <= skipped  # i386 only
    assert not skipped & sc.syscall_names(X86)
    arm = Seccomp.docker_default(arch=Arch.AARCH64, kernel="6.18")
    assert "open" in arm.skipped_syscalls() and "openat" not in arm.skipped_syscalls()
    # the names the profile allows that no nscg table has: other architectures' calls
    profile = json.loads(
        (Path(sc.__file__).parent / "_data/seccomp_docker_default.json").read_text()
    )
    named = {n for entry in profile["syscalls"] for n in entry.get("names", [])}
    known = set().union(*(sc.syscall_names(a) for a in Arch))
    assert named - known <= {
        "arm_fadvise64_64",
        "arm_sync_file_range",
        "breakpoint",
        "cacheflush",
        "recv",
        "riscv_flush_icache",
        "riscv_hwprobe",
        "s390_pci_mmio_read",
        "s390_pci_mmio_write",
        "s390_runtime_instr",
        "send",
        "set_tls",
        "swapcontext",
        "sync_file_range2",
    }


def test_profile_read_errors_are_typed(tmp_path: Path) -> None:
    """A profile that cannot be read is an NscgError (an OSError too), never a bare OSError."""
    with pytest.raises(SyscallError) as info:
        Seccomp.from_oci(tmp_path / "missing.json")
    assert info.value.errno == errno.ENOENT and isinstance(info.value, NscgError)
    with pytest.raises(SyscallError) as info2:
        Seccomp.from_oci(tmp_path)
    assert info2.value.errno == errno.EISDIR
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"\xff\xfe{")
    with pytest.raises(SpecError, match=r"not JSON|not UTF-8"):
        Seccomp.from_oci(bad)


def test_bundled_data_errors_are_typed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A broken installation (missing or corrupt tables) is a typed error, not OSError."""
    monkeypatch.setattr(sc, "_DATA", tmp_path)
    sc._table.cache_clear()
    sc._docker_profile.cache_clear()
    try:
        with pytest.raises(SyscallError, match="bundled data"):
            sc.syscall_number("read", X86)
        (tmp_path / "syscalls_x86_64.json").write_text("{")
        with pytest.raises(UnsupportedError, match="corrupt"):
            sc.syscall_number("read", X86)
        with pytest.raises(SyscallError):
            Seccomp.docker_default(arch=X86)
    finally:
        sc._table.cache_clear()
        sc._docker_profile.cache_clear()
