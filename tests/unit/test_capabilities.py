"""Unit tests of nscg.capabilities: names, set rules, masks, /proc parsing."""

from __future__ import annotations

import os

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nscg.capabilities import (
    Capabilities,
    Capability,
    CapabilityMasks,
    _parse_status,
    last_cap,
    read_process_masks,
)
from nscg.errors import SpecError, SyscallError

# The kernel's numbering (include/uapi/linux/capability.h); spot checks.
KERNEL_NUMBERS = {
    "CAP_CHOWN": 0,
    "CAP_KILL": 5,
    "CAP_SETPCAP": 8,
    "CAP_NET_ADMIN": 12,
    "CAP_NET_RAW": 13,
    "CAP_SYS_ADMIN": 21,
    "CAP_MKNOD": 27,
    "CAP_AUDIT_WRITE": 29,
    "CAP_SETFCAP": 31,
    "CAP_MAC_OVERRIDE": 32,
    "CAP_AUDIT_READ": 37,
    "CAP_PERFMON": 38,
    "CAP_BPF": 39,
    "CAP_CHECKPOINT_RESTORE": 40,
}

DOCKER = {
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
}

caps_strategy = st.frozensets(st.sampled_from(list(Capability)))


# -- Capability ---------------------------------------------------------------


def test_enum_is_dense_and_complete() -> None:
    assert [c.value for c in Capability] == list(range(41))
    for name, number in KERNEL_NUMBERS.items():
        assert Capability.parse(name) == number
        assert Capability.parse(name).cap_name == name


@pytest.mark.parametrize(
    "spelling", ["CAP_SYS_ADMIN", "cap_sys_admin", "SYS_ADMIN", "sys_admin", " Sys_Admin ", 21]
)
def test_parse_spellings(spelling: str | int) -> None:
    assert Capability.parse(spelling) is Capability.SYS_ADMIN


def test_parse_member_is_identity() -> None:
    assert Capability.parse(Capability.KILL) is Capability.KILL


@pytest.mark.parametrize("bad", ["CAP_FLY", "", "CAP_", 41, -1, 1.5, None, True])
def test_parse_rejects(bad: object) -> None:
    with pytest.raises(SpecError):
        Capability.parse(bad)  # type: ignore[arg-type]  # testing bad input


def test_spec_error_is_value_error() -> None:
    with pytest.raises(ValueError, match="unknown capability"):
        Capability.parse("CAP_FLY")


def test_str_and_mask() -> None:
    assert str(Capability.SYS_ADMIN) == "CAP_SYS_ADMIN"
    assert f"{Capability.KILL}" == "CAP_KILL"
    assert Capability.CHECKPOINT_RESTORE.mask == 1 << 40


# -- constructors ---------------------------------------------------------------


def test_none() -> None:
    spec = Capabilities.none()
    assert spec.to_masks() == (0, 0, 0, 0, 0)
    assert spec == Capabilities()


def test_all_with_explicit_last() -> None:
    spec = Capabilities.all(last=37)
    assert spec.bounding == frozenset(c for c in Capability if c <= 37)
    assert spec.permitted == spec.effective == spec.bounding
    assert spec.inheritable == spec.ambient == frozenset()
    assert spec.to_masks().bounding == (1 << 38) - 1


def test_all_uses_running_kernel() -> None:
    spec = Capabilities.all()
    assert max(spec.bounding) == min(last_cap(), max(Capability))
    spec.check_spawnable()


def test_docker_default() -> None:
    spec = Capabilities.docker_default()
    assert {c.name for c in spec.bounding} == DOCKER
    assert len(spec.bounding) == 14
    assert spec.permitted == spec.effective == spec.bounding
    assert spec.inheritable == spec.ambient == frozenset()
    spec.check_spawnable(last=40)


def test_from_keep_root_and_ambient() -> None:
    root = Capabilities.from_keep(["net_bind_service", "CAP_KILL"])
    keep = {Capability.NET_BIND_SERVICE, Capability.KILL}
    assert root.bounding == root.permitted == root.effective == keep
    assert root.inheritable == root.ambient == frozenset()

    user = Capabilities.from_keep(keep, ambient=True)
    assert user.inheritable == user.ambient == keep
    assert user.without_ambient() == root


def test_fields_accept_names_and_are_frozen() -> None:
    spec = Capabilities(bounding=["CHOWN", 5], permitted=("chown",), effective=[])
    assert spec.bounding == {Capability.CHOWN, Capability.KILL}
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        spec.bounding = frozenset()  # type: ignore[misc]  # testing immutability


def test_a_bare_string_is_rejected() -> None:
    with pytest.raises(SpecError, match="wrap a single one"):
        Capabilities(bounding="CAP_CHOWN")


# -- validators -----------------------------------------------------------------


def test_effective_must_be_permitted() -> None:
    with pytest.raises(SpecError, match="CAP_KILL"):
        Capabilities(bounding=[Capability.KILL], effective=[Capability.KILL])


def test_ambient_must_be_permitted_and_inheritable() -> None:
    with pytest.raises(SpecError, match="ambient"):
        Capabilities(bounding=["KILL"], permitted=["KILL"], effective=["KILL"], ambient=["KILL"])
    with pytest.raises(SpecError, match="ambient"):
        Capabilities(bounding=["KILL"], inheritable=["KILL"], ambient=["KILL"])
    ok = Capabilities(bounding=["KILL"], permitted=["KILL"], inheritable=["KILL"], ambient=["KILL"])
    assert ok.ambient == {Capability.KILL}


def test_evolve_revalidates() -> None:
    spec = Capabilities.from_keep(["KILL"])
    with pytest.raises(SpecError):
        attrs.evolve(spec, ambient=["KILL"])


def test_check_spawnable_bounding_rule() -> None:
    spec = Capabilities(permitted=["KILL"], effective=["KILL"])
    with pytest.raises(SpecError, match="bounding"):
        spec.check_spawnable(last=40)
    with pytest.raises(SpecError, match="bounding"):
        Capabilities(inheritable=["KILL"]).check_spawnable(last=40)


def test_unknown_to_kernel_rejected_then_dropped_on_request() -> None:
    spec = Capabilities.all(last=40)
    assert spec.unsupported(last=37) == {
        Capability.PERFMON,
        Capability.BPF,
        Capability.CHECKPOINT_RESTORE,
    }
    with pytest.raises(SpecError, match=r"0\.\.37.*CAP_BPF.*supported_only"):
        spec.check_spawnable(last=37)
    trimmed = spec.supported_only(last=37)
    assert trimmed == Capabilities.all(last=37)
    trimmed.check_spawnable(last=37)


# -- changed copies ----------------------------------------------------------------


def test_drop_removes_from_every_set() -> None:
    spec = Capabilities.docker_default().add_ambient("NET_BIND_SERVICE", "KILL")
    dropped = spec.drop("CAP_KILL", Capability.MKNOD)
    for name in ("bounding", "permitted", "effective", "inheritable", "ambient"):
        s = getattr(dropped, name)
        assert Capability.KILL not in s
        assert Capability.MKNOD not in s
    assert dropped.ambient == {Capability.NET_BIND_SERVICE}
    assert spec.drop() == spec


def test_keep_intersects() -> None:
    spec = Capabilities.docker_default().keep("CHOWN", "SYS_ADMIN")
    assert spec == Capabilities.from_keep(["CHOWN"])


def test_add_then_ambient() -> None:
    spec = Capabilities.none().add("NET_ADMIN").add_ambient("NET_ADMIN")
    assert spec == Capabilities.from_keep(["NET_ADMIN"], ambient=True)
    with pytest.raises(SpecError, match="permitted before"):
        Capabilities.none().add_ambient("NET_ADMIN")


def test_methods_return_new_objects() -> None:
    spec = Capabilities.docker_default()
    before = spec.to_masks()
    spec.drop("KILL")
    spec.add("SYS_ADMIN")
    assert spec.to_masks() == before


# -- execve model ------------------------------------------------------------------


def test_after_exec_root_and_user() -> None:
    spec = Capabilities(
        bounding=["CHOWN", "KILL", "NET_BIND_SERVICE"],
        permitted=["CHOWN", "NET_BIND_SERVICE"],
        effective=["CHOWN"],
        inheritable=["NET_BIND_SERVICE"],
        ambient=["NET_BIND_SERVICE"],
    )
    root = spec.after_exec(root=True)
    assert root.permitted == root.effective == spec.bounding
    user = spec.after_exec(root=False)
    assert user.permitted == user.effective == {Capability.NET_BIND_SERVICE}
    assert user.bounding == spec.bounding
    assert user.inheritable == spec.inheritable


@given(caps_strategy)
def test_keep_means_what_it_says(keep: frozenset[Capability]) -> None:
    root = Capabilities.from_keep(keep).after_exec(root=True)
    assert root.permitted == root.effective == keep
    user = Capabilities.from_keep(keep, ambient=True).after_exec(root=False)
    assert user.permitted == user.effective == keep


# -- masks ----------------------------------------------------------------------------


def test_to_masks_layout() -> None:
    spec = Capabilities.from_keep(["CHOWN", "CHECKPOINT_RESTORE"], ambient=True)
    masks = spec.to_masks()
    assert isinstance(masks, CapabilityMasks)
    expected = (1 << 0) | (1 << 40)
    assert tuple(masks) == (expected,) * 5
    assert masks._fields == ("bounding", "permitted", "effective", "inheritable", "ambient")
    assert all(0 <= m < 1 << 64 for m in masks)


@given(caps_strategy, caps_strategy, caps_strategy, caps_strategy)
def test_masks_round_trip(
    a: frozenset[Capability],
    b: frozenset[Capability],
    c: frozenset[Capability],
    d: frozenset[Capability],
) -> None:
    # Build a valid spec: effective ⊆ permitted, ambient ⊆ permitted & inheritable.
    spec = Capabilities(bounding=a, permitted=b | c, effective=c, inheritable=d, ambient=b & d)
    assert Capabilities.from_masks(spec.to_masks()) == spec


def test_from_masks_unknown_bits() -> None:
    masks = CapabilityMasks(1 << 41 | 1, 0, 0, 0, 0)
    with pytest.raises(SpecError, match="does not know"):
        Capabilities.from_masks(masks)
    assert Capabilities.from_masks(masks, ignore_unknown=True).bounding == {Capability.CHOWN}
    with pytest.raises(SpecError, match="64-bit"):
        Capabilities.from_masks(CapabilityMasks(1 << 64, 0, 0, 0, 0))


# -- /proc --------------------------------------------------------------------------

STATUS = """\
Name:\tcat
Umask:\t0022
State:\tR (running)
CapInh:\t0000000000000400
CapPrm:\t0000000000000421
CapEff:\t0000000000000021
CapBnd:\t000001ffffffffff
CapAmb:\t0000000000000400
NoNewPrivs:\t0
"""


def test_parse_status() -> None:
    masks = _parse_status(STATUS)
    assert masks == CapabilityMasks(
        bounding=(1 << 41) - 1,
        permitted=0x421,
        effective=0x21,
        inheritable=0x400,
        ambient=0x400,
    )
    spec = Capabilities.from_masks(masks)
    assert spec.ambient == {Capability.NET_BIND_SERVICE}
    assert spec.effective == {Capability.CHOWN, Capability.KILL}


def test_parse_status_old_kernel_and_errors() -> None:
    old = "\n".join(line for line in STATUS.splitlines() if not line.startswith("CapAmb"))
    assert _parse_status(old).ambient == 0
    with pytest.raises(SpecError, match="CapEff"):
        _parse_status(STATUS.replace("CapEff", "Capeff"))
    with pytest.raises(SpecError, match="malformed"):
        _parse_status(STATUS.replace("0000000000000021", "zz"))


def test_of_self_matches_proc() -> None:
    with open("/proc/self/status", encoding="ascii") as f:
        text = f.read()
    masks = read_process_masks("self")
    assert masks == _parse_status(text)
    spec = Capabilities.of_process()
    assert spec.to_masks().effective == masks.effective & ((1 << 41) - 1)
    assert Capabilities.of_process(os.getpid()) == spec


def test_of_process_errors() -> None:
    with pytest.raises(SpecError):
        read_process_masks("1; rm")
    with pytest.raises(SpecError):
        read_process_masks(0)
    # pid_max is at most 2**22, so this pid cannot exist.
    with pytest.raises(SyscallError) as info:
        Capabilities.of_process(2**30)
    assert isinstance(info.value, OSError)
    assert info.value.filename == f"/proc/{2**30}/status"


def test_last_cap_reads_proc() -> None:
    with open("/proc/sys/kernel/cap_last_cap", encoding="ascii") as f:
        assert last_cap() == int(f.read())
    assert last_cap() >= 36
