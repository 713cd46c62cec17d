"""Discovery and create-planning of nscg.cgroups against fake /proc and cgroupfs trees.

Nothing here touches the host's /sys/fs/cgroup: every tree lives in tmp_path.
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
from pathlib import Path

import attrs
import pytest

from nscg.cgroups import (
    CgroupMode,
    CgroupV2,
    Limits,
    discover,
    find_stale,
    move_self_to_leaf,
)
from nscg.cgroups import _handle as cgroups
from nscg.errors import SpecError, SyscallError, UnsupportedError

V1_MOUNTS = """\
40 31 0:33 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
41 31 0:34 / /sys/fs/cgroup/blkio rw - cgroup cgroup rw,blkio
42 31 0:35 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
43 31 0:36 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
44 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
"""
V1_TABLE = "cpu\t4\t1\t1\ncpuacct\t4\t1\t1\nmemory\t1\t9\t1\nblkio\t2\t1\t1\npids\t3\t1\t1\n"


@attrs.define
class Tree:
    proc: str
    root: str

    def d(self, rel: str) -> Path:
        return Path(self.root) / rel.strip("/")


def make_tree(
    tmp_path: Path,
    *,
    own: str = "/",
    controllers: str = "cpu memory pids io",
    subtree: str = "",
    hybrid: bool = False,
    v2: bool = True,
) -> Tree:
    """Build a fake procfs and a fake cgroup2 mount; ``own`` is the process's cgroup."""
    root = tmp_path / "cg"
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    root.mkdir()
    mounts = f"30 1 0:29 / {root} rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n" if v2 else ""
    table = "#subsys_name\thierarchy\tnum_cgroups\tenabled\nhugetlb\t0\t1\t1\n"
    if hybrid:
        mounts += V1_MOUNTS
        table += V1_TABLE
        controllers = "hugetlb"
    else:
        table += "".join(f"{c}\t0\t1\t1\n" for c in ("cpu", "memory", "pids", "blkio"))
    (proc / "self" / "mountinfo").write_text(mounts)
    (proc / "self" / "cgroup").write_text(f"0::{own}\n")
    (proc / "cgroups").write_text(table)
    (root / "cgroup.controllers").write_text(controllers + "\n")
    (root / "cgroup.subtree_control").write_text(subtree + "\n")
    (root / "cgroup.procs").write_text("1\n")
    return Tree(proc=str(proc), root=str(root))


def add_cgroup(
    tree: Tree, rel: str, *, controllers: str, subtree: str = "", procs: str = ""
) -> Path:
    d = tree.d(rel)
    d.mkdir(parents=True)
    (d / "cgroup.controllers").write_text(controllers + "\n")
    (d / "cgroup.subtree_control").write_text(subtree + "\n")
    (d / "cgroup.procs").write_text(procs)
    (d / "cgroup.events").write_text("populated 0\nfrozen 0\n")
    return d


def listing(tree: Tree) -> set[str]:
    return {os.path.relpath(dp, tree.root) for dp, _, _ in os.walk(tree.root)}


# ---------------------------------------------------------------- discovery


def test_discover_unified(tmp_path: Path) -> None:
    tree = make_tree(tmp_path, own="/app", subtree="memory")
    add_cgroup(tree, "app", controllers="memory", subtree="", procs="7\n8\n")
    rep = discover(proc=tree.proc)
    assert rep.mode is CgroupMode.UNIFIED
    assert rep.mount_point == tree.root
    assert rep.mount_options == ("rw", "nsdelegate")
    assert rep.own_path == "/app"
    assert rep.own_dir == str(tree.d("app"))
    assert rep.root_controllers == {"cpu", "memory", "pids", "io"}
    assert rep.controllers == {"memory"}
    assert rep.own_process_count == 2
    assert rep.v1_controllers == frozenset()
    assert rep.delegation is not None and rep.delegation.path == rep.own_dir
    assert rep.usable
    assert rep.unavailable_reason("memory") is None
    assert "does not offer" in (rep.unavailable_reason("rdma") or "")


def test_discover_hybrid_names_v1_controllers(tmp_path: Path) -> None:
    tree = make_tree(tmp_path, hybrid=True)
    rep = discover(proc=tree.proc)
    assert rep.mode is CgroupMode.HYBRID
    assert rep.v1_controllers == {"memory", "io", "pids", "cpu"}
    assert ("/sys/fs/cgroup/cpu,cpuacct", ("cpu", "cpuacct")) in rep.v1_mounts
    assert ("/sys/fs/cgroup/systemd", ()) in rep.v1_mounts
    reason = rep.unavailable_reason("memory") or ""
    assert "cgroup v1 holds cpu, io, memory, pids" in reason
    assert "hugetlb" in reason
    assert rep.unavailable_reason("hugetlb") is None


def test_discover_legacy_and_none(tmp_path: Path) -> None:
    legacy = make_tree(tmp_path / "a", hybrid=True, v2=False)
    rep = discover(proc=legacy.proc)
    assert rep.mode is CgroupMode.LEGACY
    assert not rep.usable
    with pytest.raises(UnsupportedError, match="no cgroup2 file system") as ei:
        CgroupV2.create(report=rep)
    assert ei.value.feature == "cgroup2"
    none = make_tree(tmp_path / "b", v2=False)
    assert discover(proc=none.proc).mode is CgroupMode.NONE


def test_discover_pid(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    (Path(tree.proc) / "4242").mkdir()
    (Path(tree.proc) / "4242" / "cgroup").write_text("0::/svc\n")
    add_cgroup(tree, "svc", controllers="")
    rep = discover(4242, proc=tree.proc)
    assert rep.own_dir == str(tree.d("svc"))


def test_discover_real_host_reads_only() -> None:
    rep = discover()  # whatever this host is; must not raise
    assert isinstance(rep.mode, CgroupMode)
    if rep.mode in (CgroupMode.UNIFIED, CgroupMode.HYBRID):
        assert rep.mount_point is not None


# ----------------------------------------------------------------- planning


def test_hybrid_create_raises_before_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = make_tree(tmp_path, hybrid=True)
    rep = discover(proc=tree.proc)
    monkeypatch.setattr(os, "mkdir", _forbidden)
    monkeypatch.setattr(cgroups, "_write", _forbidden)
    with pytest.raises(UnsupportedError, match="cgroup v1 holds") as ei:
        CgroupV2.create(Limits(memory_max="64M"), report=rep)
    assert ei.value.feature == "cgroup2.memory"
    with pytest.raises(UnsupportedError) as ei:
        CgroupV2.create(Limits(pids_max=10, cpu_max=0.5), report=rep)
    assert ei.value.feature in ("cgroup2.cpu", "cgroup2.pids")


def _forbidden(*args: object, **kwargs: object) -> None:
    raise AssertionError(f"nothing may be written here: {args}")


def test_create_enables_controllers_and_rolls_back(tmp_path: Path) -> None:
    tree = make_tree(tmp_path, controllers="cpu memory pids")
    add_cgroup(tree, "nscg", controllers="")  # a real kernel fills in the files itself
    rep = discover(proc=tree.proc)
    # a fake tree has no pids.max in the new directory: the create fails after
    # mkdir, and must remove what it made
    with pytest.raises(UnsupportedError, match=r"pids\.max") as ei:
        CgroupV2.create(Limits(pids_max=10), report=rep)
    assert ei.value.feature == "cgroup2.pids"
    assert listing(tree) == {".", "nscg"}
    assert tree.d("").joinpath("cgroup.subtree_control").read_text() == "+pids"
    assert tree.d("nscg").joinpath("cgroup.subtree_control").read_text() == "+pids"


def test_create_without_limits_and_close(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    rep = discover(proc=tree.proc)
    cg = CgroupV2.create(report=rep)
    assert os.path.dirname(cg.path) == str(tree.d("nscg"))
    m = re.fullmatch(r"nscg-(\d+)-(\d+)-([0-9a-f]+)", cg.name)
    assert m is not None and int(m.group(1)) == os.getpid()
    assert cg.owned
    other = CgroupV2.create(report=rep, parent=tree.root, name="fixed")
    assert other.path == str(tree.d("fixed"))
    with pytest.raises(SpecError, match="already exists"):
        CgroupV2.create(report=rep, parent=tree.root, name="fixed")
    cg.close()
    cg.close()
    other.close()
    assert not cg.owned
    assert listing(tree) == {".", "nscg"}


def test_internal_process_rule(tmp_path: Path) -> None:
    tree = make_tree(tmp_path, own="/app", subtree="memory pids")
    add_cgroup(tree, "app", controllers="memory pids", procs="7\n")
    rep = discover(proc=tree.proc)
    with pytest.raises(UnsupportedError, match="no internal processes") as ei:
        CgroupV2.create(Limits(memory_max="1G"), report=rep)
    assert ei.value.feature == "cgroup2.memory"
    assert listing(tree) == {".", "app"}
    # already enabled (the caller moved itself out): planning passes
    (tree.d("app") / "cgroup.subtree_control").write_text("memory pids\n")
    (tree.d("app") / "cgroup.procs").write_text("")
    add_cgroup(tree, "app/nscg", controllers="memory pids")
    with pytest.raises(UnsupportedError, match=r"memory\.max"):  # fake tree: no files
        CgroupV2.create(Limits(memory_max="1G"), report=discover(proc=tree.proc))
    assert listing(tree) == {".", "app", "app/nscg"}


def test_controller_not_delegated_to_own(tmp_path: Path) -> None:
    tree = make_tree(tmp_path, own="/app", subtree="pids")
    add_cgroup(tree, "app", controllers="pids")
    with pytest.raises(UnsupportedError, match=r"\+memory") as ei:
        CgroupV2.create(Limits(memory_max="1G"), report=discover(proc=tree.proc))
    assert ei.value.feature == "cgroup2.memory"
    assert "Delegate=yes" in str(ei.value)
    assert listing(tree) == {".", "app"}


def test_missing_write_access(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree = make_tree(tmp_path, own="/app", subtree="memory")
    add_cgroup(tree, "app", controllers="memory")
    rep = discover(proc=tree.proc)
    monkeypatch.setattr(os, "access", lambda *a, **k: False)
    monkeypatch.setattr(os, "mkdir", _forbidden)
    with pytest.raises(UnsupportedError, match="Delegate=yes") as ei:
        CgroupV2.create(Limits(memory_max="1G"), report=rep)
    assert ei.value.feature == "cgroup2.delegation"
    with pytest.raises(UnsupportedError, match="not writable") as ei:
        CgroupV2.create(report=rep)
    assert ei.value.feature == "cgroup2.delegation"


def test_bad_parent_and_name(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    rep = discover(proc=tree.proc)
    with pytest.raises(SpecError, match="not inside"):
        CgroupV2.create(parent=str(tmp_path), report=rep)
    with pytest.raises(SpecError, match="not an existing"):
        CgroupV2.create(parent=str(tree.d("nope")), report=rep)
    for bad in ("", "a/b", "..", "cgroup.procs"):
        with pytest.raises(SpecError):
            CgroupV2.create(name=bad, report=rep)
    assert listing(tree) == {"."}


def test_move_self_to_leaf_in_root_is_noop(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    assert move_self_to_leaf(report=discover(proc=tree.proc)) == tree.root
    assert listing(tree) == {"."}


def test_default_parent_after_move_self(tmp_path: Path) -> None:
    tree = make_tree(tmp_path, own="/app/nscg-self", subtree="memory")
    add_cgroup(tree, "app", controllers="memory", subtree="memory")
    add_cgroup(tree, "app/nscg-self", controllers="memory", procs="7\n")
    rep = discover(proc=tree.proc)
    assert move_self_to_leaf(report=rep) == str(tree.d("app/nscg-self"))
    cg = CgroupV2.create(report=rep)
    assert os.path.dirname(cg.path) == str(tree.d("app/nscg"))
    cg.close()


# ----------------------------------------------------------- reading files


def test_usage_from_files(tmp_path: Path) -> None:
    d = tmp_path / "cg"
    d.mkdir()
    files = {
        "cgroup.procs": "5\n6\n",
        "cgroup.events": "populated 1\nfrozen 1\n",
        "cpu.stat": "usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\n"
        "nr_periods 10\nnr_throttled 4\nthrottled_usec 700\n",
        "memory.events": "low 0\nhigh 2\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n",
        "memory.current": "4096\n",
        "memory.peak": "8192\n",
        "memory.stat": "anon 4096\nfile 0\n",
        "pids.current": "2\n",
        "io.stat": "8:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n"
        "8:16 rbytes=1 wbytes=2 rios=1 wios=1 dbytes=0 dios=0\n",
        "cpu.pressure": "some avg10=0.00 avg60=0.00 avg300=0.00 total=5\n"
        "full avg10=0.00 avg60=0.00 avg300=0.00 total=1\n",
    }
    for k, v in files.items():
        (d / k).write_text(v)
    (d / "child").mkdir()
    (d / "child" / "cgroup.procs").write_text("9\n")
    cg = CgroupV2(d)
    assert not cg.owned
    assert cg.events().populated and cg.events().frozen
    assert cg.pids() == [5, 6]
    assert sorted(cg.pids(recursive=True)) == [5, 6, 9]
    u = cg.usage()
    assert u.cpu_time == 1.5 and u.cpu_user_usec == 1_000_000
    assert (u.nr_periods, u.nr_throttled, u.throttled_usec) == (10, 4, 700)
    assert (u.memory_current, u.memory_peak) == (4096, 8192)
    assert (u.pids_current, u.pids_peak) == (2, None)
    assert (u.oom, u.oom_kill, u.oom_killed) == (1, 1, True)
    assert (u.io_rbytes, u.io_wbytes) == (11, 22)
    assert cg.memory_events().high == 2
    assert cg.memory_stat() == {"anon": 4096, "file": 0}
    pressure = cg.pressure("cpu")
    assert pressure is not None and pressure.some.total_usec == 5
    assert cg.pressure("io") is None
    assert cg.io_stat()["8:16"]["wbytes"] == 2
    assert os.fspath(cg) == str(d)


def test_open_rejects_non_cgroup(tmp_path: Path) -> None:
    with pytest.raises(SpecError):
        CgroupV2.open(tmp_path)


def test_find_stale(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    for n in (f"nscg-{dead.pid}-1-abc123", f"nscg-{os.getpid()}-2-def456", "other", "nscg-x"):
        (tmp_path / n).mkdir()
    assert find_stale(tmp_path) == [str(tmp_path / f"nscg-{dead.pid}-1-abc123")]
    assert find_stale(tmp_path / "missing") == []


def test_refuses_to_kill_or_remove_a_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SpecError, match="root cgroup"):
        CgroupV2("/proc").kill()  # any mount point stands for a cgroup2 root
    (tmp_path / "child").mkdir()
    monkeypatch.setattr(os.path, "ismount", lambda p: os.fspath(p) == str(tmp_path))
    with pytest.raises(SpecError, match="root cgroup"):
        CgroupV2(tmp_path).remove()
    assert (tmp_path / "child").is_dir()


def test_write_errors_are_mapped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cg = CgroupV2(tmp_path)
    with pytest.raises(UnsupportedError, match="memory controller") as ei:
        cg.write("memory.max", "1")  # the file does not exist
    assert ei.value.feature == "cgroup2.memory"
    (tmp_path / "cpu.max").write_text("max 100000\n")

    def fail_with(err: int) -> None:
        def fake_write(fd: int, data: bytes) -> int:
            raise OSError(err, os.strerror(err))

        monkeypatch.setattr(os, "write", fake_write)

    fail_with(errno.EINVAL)
    with pytest.raises(SpecError, match="rejected"):
        cg.write("cpu.max", "0 1")
    fail_with(errno.EACCES)
    with pytest.raises(UnsupportedError, match="Delegate=yes") as ei:
        cg.write("cpu.max", "max")
    assert ei.value.feature == "cgroup2.delegation"
    (tmp_path / "cgroup.procs").write_text("")
    fail_with(errno.ESRCH)
    with pytest.raises(SyscallError) as si:
        cg.add_pid(999999)
    assert si.value.errno == errno.ESRCH
    fail_with(errno.EBUSY)
    with pytest.raises(SyscallError, match="only in leaves"):
        cg.add_pid(1)


def test_apply_checks_controllers(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    d = add_cgroup(tree, "x", controllers="pids")
    cg = CgroupV2.open(d)
    with pytest.raises(UnsupportedError, match="memory not enabled") as ei:
        cg.apply(Limits(memory_max="1G"), report=discover(proc=tree.proc))
    assert ei.value.feature == "cgroup2.memory"
    with pytest.raises(SyscallError, match="does not exist"):
        CgroupV2(tmp_path / "gone").add_pid(1)
    (d / "pids.max").write_text("max\n")
    cg.apply(Limits(pids_max=7))
    assert (d / "pids.max").read_text().startswith("7")
