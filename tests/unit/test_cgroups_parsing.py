"""Pure logic of nscg.cgroups: parsers, byte sizes, limit validation and write plans."""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nscg.cgroups import (
    CpuMax,
    HugetlbLimit,
    IoLimit,
    Limits,
    parse_size,
)
from nscg.cgroups._fs import (
    parse_cgroup_file,
    parse_flat_keyed,
    parse_mountinfo,
    parse_nested_keyed,
    parse_pressure,
    parse_proc_cgroups,
    wait_file,
)
from nscg.errors import SpecError

MiB = 1 << 20

# ------------------------------------------------------------------ sizes


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("256M", 256 * MiB),
        ("1G", 1 << 30),
        ("512K", 512 << 10),
        ("512k", 512 << 10),
        ("64MiB", 64 * MiB),
        ("64mb", 64 * MiB),
        ("1.5G", 3 << 29),
        ("100", 100),
        (" 2T ", 2 << 40),
        ("max", "max"),
        ("MAX", "max"),
        (0, 0),
        (4096, 4096),
    ],
)
def test_parse_size(text: int | str, expected: int | str) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["", "12Q", "-1", "1.2.3M", "M", "ten", -5, True, 1 << 64])
def test_parse_size_rejects(bad: object) -> None:
    with pytest.raises(SpecError):
        parse_size(bad)  # type: ignore[arg-type]  # deliberately wrong types too


@given(st.integers(min_value=0, max_value=1 << 30), st.sampled_from(["", "K", "M", "G"]))
def test_parse_size_suffixes(n: int, suffix: str) -> None:
    mult = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[suffix]
    assert parse_size(f"{n}{suffix}") == n * mult
    assert parse_size(f"{n}{suffix.lower()}iB" if suffix else str(n)) == n * mult


# ------------------------------------------------------------------ limits


def test_limits_convert_and_plan() -> None:
    lim = Limits(
        memory_max="64M",
        memory_high="48M",
        memory_low=1 << 20,
        memory_min="max",
        memory_swap_max=0,
        memory_oom_group=True,
        cpu_max=0.5,
        cpu_weight=200,
        cpuset_cpus="0-1,3",
        cpuset_mems="0",
        pids_max="32",
        io_weight=300,
        hugetlb=[HugetlbLimit("2MB", "4M")],
    )
    assert lim.memory_max == 64 * MiB
    assert lim.cpu_max == CpuMax(quota_usec=50_000, period_usec=100_000)
    assert lim.pids_max == 32
    assert lim.controllers() == {"memory", "cpu", "cpuset", "pids", "io", "hugetlb"}
    plan = dict(lim.plan())
    assert plan == {
        "cpuset.cpus": "0-1,3",
        "cpuset.mems": "0",
        "memory.min": "max",
        "memory.low": str(MiB),
        "memory.high": str(48 * MiB),
        "memory.max": str(64 * MiB),
        "memory.swap.max": "0",
        "memory.oom.group": "1",
        "cpu.max": "50000 100000",
        "cpu.weight": "200",
        "pids.max": "32",
        "io.weight": "default 300",
        "hugetlb.2MB.max": str(4 * MiB),
    }
    # cpuset is written first so that memory placement is settled before limits
    assert lim.plan()[0][0] == "cpuset.cpus"


def test_limits_empty() -> None:
    assert Limits().empty
    assert Limits().plan() == ()
    assert not Limits(pids_max="max").empty


@pytest.mark.parametrize(
    "kwargs",
    [
        {"memory_max": "lots"},
        {"memory_high": -1},
        {"cpu_max": 0},
        {"cpu_max": -0.5},
        {"cpu_max": "fast"},
        {"cpu_weight": 0},
        {"cpu_weight": 10001},
        {"cpu_weight": True},
        {"cpuset_cpus": "0-"},
        {"cpuset_cpus": "3-1"},
        {"cpuset_mems": "a"},
        {"pids_max": -1},
        {"pids_max": "many"},
        {"pids_max": 1.5},
        {"io_weight": 0},
        {"memory_oom_group": 1},
        {"io": ["/dev/sda"]},
        {"hugetlb": [("2MB", "4M")]},
    ],
)
def test_limits_reject(kwargs: dict[str, object]) -> None:
    with pytest.raises(SpecError):
        Limits(**kwargs)  # type: ignore[arg-type]  # deliberately invalid values


def test_limits_evolve_validates() -> None:
    lim = Limits(memory_max="1G")
    assert attrs.evolve(lim, memory_max="2G").memory_max == 2 << 30
    with pytest.raises(SpecError):
        attrs.evolve(lim, cpu_weight=0)


def test_cpumax() -> None:
    assert CpuMax.from_cpus(0.2).render() == "20000 100000"
    assert CpuMax.from_cpus(2).render() == "200000 100000"
    assert CpuMax.from_cpus(0.001).quota_usec == 1000  # the kernel's minimum
    assert CpuMax.from_cpus(0.5, period_usec=10_000).render() == "5000 10000"
    assert CpuMax.parse("max 100000") == CpuMax(None)
    assert CpuMax.parse("max 100000").cpus is None
    assert CpuMax.parse("25000 100000").cpus == 0.25
    assert Limits(cpu_max="max 50000").cpu_max == CpuMax(None, 50_000)
    for bad in ("", "x 1", "100 abc"):
        with pytest.raises(SpecError):
            CpuMax.parse(bad)
    with pytest.raises(SpecError):
        CpuMax(quota_usec=10, period_usec=100_000)
    with pytest.raises(SpecError):
        CpuMax(quota_usec=None, period_usec=10)


def test_io_limit_resolves_device(tmp_path: Path) -> None:
    # /dev/loop0 or any block device; skip when the container has none
    dev = next(
        (f"/dev/{d}" for d in sorted(os.listdir("/dev")) if _is_blk(f"/dev/{d}")),
        None,
    )
    if dev is None:
        pytest.skip("no block device in /dev")
    rdev = os.stat(dev).st_rdev
    lim = Limits(io=[IoLimit(dev, rbps="1M", wiops=50, weight=100)])
    devno = f"{os.major(rdev)}:{os.minor(rdev)}"
    assert lim.plan() == (
        ("io.max", f"{devno} rbps=1048576 wiops=50"),
        ("io.weight", f"{devno} 100"),
    )


def _is_blk(path: str) -> bool:
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False


def test_io_limit_rejects(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="absolute"):
        IoLimit("sda", rbps=1)
    with pytest.raises(SpecError, match="at least one"):
        IoLimit("/dev/sda")
    with pytest.raises(SpecError):
        IoLimit("/dev/sda", riops=0)
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(SpecError, match="not a block device"):
        Limits(io=[IoLimit(str(f), rbps="1M")]).plan()
    with pytest.raises(SpecError, match="cannot stat"):
        Limits(io=[IoLimit(str(tmp_path / "nope"), rbps="1M")]).plan()


def test_hugetlb_rejects() -> None:
    with pytest.raises(SpecError):
        HugetlbLimit("2M", "4M")
    with pytest.raises(SpecError):
        HugetlbLimit("2MB", "lots")


# ----------------------------------------------------------------- parsers

MOUNTINFO_HYBRID = """\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 25 0:28 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
32 31 0:29 / /sys/fs/cgroup/unified rw,nosuid,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
33 31 0:30 / /sys/fs/cgroup/systemd rw shared:11 - cgroup cgroup rw,xattr,name=systemd
35 31 0:32 / /sys/fs/cgroup/cpu,cpuacct rw shared:15 - cgroup cgroup rw,cpu,cpuacct
36 31 0:33 / /sys/fs/cgroup/memory rw shared:16 - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/blkio rw shared:17 - cgroup cgroup rw,blkio
38 31 0:35 / /sys/fs/cgroup/pids rw shared:18 - cgroup cgroup rw,pids
40 1 8:1 / /mnt/with\\040space rw - ext4 /dev/sda1 rw
bogus line
"""


def test_parse_mountinfo() -> None:
    ms = parse_mountinfo(MOUNTINFO_HYBRID)
    assert len(ms) == 9
    v2 = [m for m in ms if m.fstype == "cgroup2"]
    assert v2[0].mount_point == "/sys/fs/cgroup/unified"
    assert v2[0].super_options == ("rw", "nsdelegate")
    assert ms[4].super_options == ("rw", "cpu", "cpuacct")
    assert ms[-1].mount_point == "/mnt/with space"
    assert ms[-1].source == "/dev/sda1"


def test_parse_cgroup_file() -> None:
    text = (
        "12:pids:/user.slice\n4:cpu,cpuacct:/\n"
        "1:name=systemd:/user.slice/x.scope\n0::/user.slice/x.scope\n"
    )
    lines = parse_cgroup_file(text)
    assert lines[1].controllers == ("cpu", "cpuacct")
    v2 = [ln for ln in lines if ln.hierarchy == 0 and not ln.controllers]
    assert v2[0].path == "/user.slice/x.scope"
    assert parse_cgroup_file("0::/a:b\n")[0].path == "/a:b"


def test_parse_proc_cgroups() -> None:
    text = (
        "#subsys_name\thierarchy\tnum_cgroups\tenabled\n"
        "cpu\t1\t5\t1\nhugetlb\t0\t1\t1\nrdma\t0\t1\t0\n"
    )
    assert parse_proc_cgroups(text) == {
        "cpu": (1, True),
        "hugetlb": (0, True),
        "rdma": (0, False),
    }


def test_parse_keyed_files() -> None:
    assert parse_flat_keyed("usage_usec 10\nuser_usec 7\nweird\nx y\n") == {
        "usage_usec": 10,
        "user_usec": 7,
    }
    io = parse_nested_keyed(
        "8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0\n\n254:0 rbytes=5\n"
    )
    assert io["8:0"]["wbytes"] == "2" and io["254:0"] == {"rbytes": "5"}
    psi = parse_pressure(
        "some avg10=1.50 avg60=0.20 avg300=0.00 total=12345\n"
        "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
    )
    assert psi["some"].avg10 == 1.5 and psi["some"].total_usec == 12345
    assert psi["full"].total_usec == 0


# ----------------------------------------------------------------- waiting


def test_wait_file_wakes_on_modify(tmp_path: Path) -> None:
    f = tmp_path / "cgroup.events"
    f.write_text("populated 1\nfrozen 0\n")

    def later() -> None:
        time.sleep(0.2)
        f.write_text("populated 0\nfrozen 0\n")

    t = threading.Thread(target=later)
    t0 = time.monotonic()
    t.start()
    ok = wait_file(str(f), lambda s: "populated 0" in s, timeout=10, recheck=30)
    t.join()
    assert ok
    assert time.monotonic() - t0 < 5  # woken by inotify, not by the 30 s recheck


def test_wait_file_timeout(tmp_path: Path) -> None:
    f = tmp_path / "cgroup.events"
    f.write_text("populated 1\n")
    t0 = time.monotonic()
    assert not wait_file(str(f), lambda s: "populated 0" in s, timeout=0.2)
    assert 0.15 < time.monotonic() - t0 < 3
    assert wait_file(str(f), lambda s: "populated 1" in s, timeout=0)
    with pytest.raises(FileNotFoundError):
        wait_file(str(tmp_path / "gone"), lambda s: True, timeout=0)
