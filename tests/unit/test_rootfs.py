"""RootFS spec validation, the plan check and the change report (no privileges)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

import nscg
from nscg import Container, Namespace, RootFS, SpecError
from nscg.rootfs import (
    DESTS_SIZE,
    Bind,
    Chmod,
    Data,
    File,
    Mkdir,
    ReadOnly,
    Symlink,
    Tmpfs,
    compute_changes,
    expand_dests,
    flatten,
)


@pytest.mark.parametrize("dest", ["tmp", "", "a/b", "/a/../b", "/a\0b"])
def test_bad_destinations(dest: str) -> None:
    with pytest.raises(SpecError):
        RootFS.host().tmpfs(dest)


def test_destination_is_normalized() -> None:
    assert RootFS().tmpfs("//a/./b/").ops[0].dest == "/a/b"


def test_missing_source_and_nul(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="does not exist"):
        RootFS.host().bind(str(tmp_path / "nope"), "/x")
    with pytest.raises(SpecError, match="absolute"):
        RootFS.host().bind("relative", "/x")
    with pytest.raises(SpecError):
        RootFS.host().bind("/tm\0p", "/x")
    assert RootFS.host().bind(str(tmp_path / "nope"), "/x", optional=True) == RootFS.host()


def test_overlapping_plans() -> None:
    with pytest.raises(SpecError, match="mounted twice"):
        RootFS().tmpfs("/a").tmpfs("/a")
    with pytest.raises(SpecError, match="hidden"):
        RootFS().tmpfs("/a/b").tmpfs("/a")
    with pytest.raises(SpecError, match="hidden"):
        RootFS().file("/etc/x", b"").then(Bind("/", "/"))
    RootFS().tmpfs("/a").tmpfs("/a/b")  # stacking below is fine
    RootFS([Mkdir("/a"), Tmpfs("/a")])  # making the mount point is fine


def test_builders_are_immutable() -> None:
    a = RootFS.host()
    b = a.tmpfs("/scratch", size=1 << 20)
    assert a != b and len(b.ops) == len(a.ops) + 1
    assert b.ops[-1] == Tmpfs("/scratch", size=1 << 20)
    with pytest.raises(SpecError):
        a.tmpfs("/x", size=0)
    with pytest.raises(SpecError):
        a.with_propagation("shared")  # type: ignore[arg-type]  # checked at runtime


def test_host_defaults() -> None:
    r = RootFS.host()
    assert r.ops[0] == Bind("/", "/", readonly=True, recursive=True)
    kinds = [type(o).__name__ for o in r.ops]
    assert kinds[:4] == ["Bind", "Proc", "Dev", "Tmpfs"]
    assert "Mask" in kinds and "ReadOnly" in kinds
    assert r.exec_roots() == ["/"]


def test_container_cross_field_rules() -> None:
    with pytest.raises(SpecError, match="mount namespace"):
        Container().without_namespaces("mount").with_rootfs().validate()
    with pytest.raises(SpecError, match="pid namespace"):
        Container().without_namespaces("pid").with_rootfs().validate()
    Container().without_namespaces("pid").with_rootfs(RootFS.host(proc=False)).validate()
    with pytest.raises(SpecError, match="ipc"):
        Container().without_namespaces("ipc").with_rootfs(RootFS.host().mqueue()).validate()
    assert Container().with_rootfs().rootfs == RootFS.host()
    assert Namespace.MOUNT in Container().namespaces


def test_flatten_marks_every_prim_with_its_op() -> None:
    prims = flatten(RootFS.host(), userns=True)
    assert prims[0].kind == "bind" and prims[0].dest == "" and prims[0].op_index == 0
    dev = [p for p in prims if p.op_index == 2]
    assert {p.dest for p in dev} >= {"dev", "dev/null", "dev/pts", "dev/ptmx", "dev/shm"}


def test_exported() -> None:
    assert nscg.RootFS is RootFS
    assert "RootFS" in nscg.__all__ and "Changes" in nscg.__all__


def test_change_report_from_an_upper_dir(tmp_path: Path) -> None:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    for d in ("etc", "var/lib", "opq"):
        (lower / d).mkdir(parents=True)
    (lower / "etc/passwd").write_text("x")
    (lower / "etc/gone").write_text("x")
    (lower / "opq/old").write_text("x")
    (upper / "etc").mkdir(parents=True)
    (upper / "etc/passwd").write_text("y")  # modified
    (upper / "etc/new").write_text("y")  # added
    if os.geteuid() != 0:
        pytest.skip("whiteouts (0/0 char devices) need CAP_MKNOD")
    os.mknod(upper / "etc/gone", stat.S_IFCHR, 0)  # deleted
    (upper / "opq").mkdir()
    os.setxattr(upper / "opq", "trusted.overlay.opaque", b"y")
    ch = compute_changes(str(upper), [str(lower)], "/")
    assert ch.added == {"/etc/new"}
    assert ch.modified == {"/etc/passwd"}
    assert ch.deleted == {"/etc/gone", "/opq/old"}


# ------------------------------------------------------------------ missing destinations
def test_expand_dests_rebuilds_the_nearest_existing_directory_as_a_tmpfs() -> None:
    root = RootFS.host().tmpfs("/nscg-missing/t")
    plan, origin = expand_dests(root)
    first = plan.ops[0]
    assert first == Tmpfs("/", size=DESTS_SIZE, mode=os.stat("/").st_mode & 0o7777)
    binds = {op.dest: op for op in plan.ops if isinstance(op, Bind)}
    assert binds["/usr"] == Bind("/usr", "/usr", readonly=True, optional=True)
    # what a later op mounts at is left to it
    for later in ("/proc", "/dev", "/tmp", "/run"):
        assert later not in binds
    assert plan.ops[-1] == ReadOnly("/", optional=False, recursive=False)
    assert len(origin) == len(plan.ops)
    n = len(plan.ops) - len(root.ops)  # (the tmpfs and the n-1 entries replace op #0)
    assert origin[:n] == [0] * n and origin[-1] == 0
    assert plan.ops[n:-1] == root.ops[1:]


def test_expand_dests_leaves_paths_that_exist_or_are_writable_and_can_be_off() -> None:
    for root in (
        RootFS.host().tmpfs("/usr"),
        RootFS.host().tmpfs("/tmp/new/dir"),
        RootFS.host().mkdir("/etc"),
        RootFS.host().tmpfs("/nscg-missing").with_made_dests(False),
        RootFS().tmpfs("/a/b"),
    ):
        plan, origin = expand_dests(root)
        assert plan == root and origin == list(range(len(root.ops)))


def test_expand_dests_deeper_down_and_files_replacing_an_entry() -> None:
    plan, _ = expand_dests(RootFS.host().tmpfs("/usr/share/nscg-missing/x"))
    assert Tmpfs("/usr/share", size=1 << 20, mode=0o755) in plan.ops
    assert plan.ops[-1] == ReadOnly("/usr/share", optional=False, recursive=False)
    # a file op over an existing file: its directory is rebuilt without that entry
    plan, _ = expand_dests(RootFS.host().file("/etc/hostname", "x").symlink("/x", "/etc/hosts"))
    dests = [op.dest for op in plan.ops]
    assert dests.count("/etc/hostname") == 1 and dests.count("/etc/hosts") == 1
    assert File("/etc/hostname", "x") in plan.ops and Symlink("/x", "/etc/hosts") in plan.ops


def test_new_ops_flatten() -> None:
    root = RootFS().tmpfs("/t").then(Chmod("/t", 0o700), ReadOnly("/t", recursive=False))
    kinds = [(p.kind, p.dest, p.mode, "recursive" in p.flags) for p in flatten(root, True)]
    assert kinds[1:] == [("chmod", "t", 0o700, False), ("readonly", "t", 0, False)]
    root = RootFS().then(Data("/etc/x", b"data", readonly=True))
    assert root.ops[0] == Data("/etc/x", b"data", 0o600, True)
    with pytest.raises(SpecError):
        RootFS().then(Data("/x", b"1")).tmpfs("/")
