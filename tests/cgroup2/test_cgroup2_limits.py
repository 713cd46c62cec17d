"""Limits enforced by a real cgroup v2 kernel (run inside tools/vm/run-in-v2vm.sh)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from nscg.cgroups import (
    CgroupV2,
    CpuMax,
    HugetlbLimit,
    IoLimit,
    Limits,
)
from nscg.errors import SpecError, UnsupportedError

pytestmark = pytest.mark.cgroup2

Spawn = Callable[[CgroupV2, str], "subprocess.Popen[bytes]"]
MiB = 1 << 20

ALLOC_256M = (
    f"exec {sys.executable} -c '"
    "import sys\n"
    "chunks = []\n"
    "for i in range(16):\n"
    '    chunks.append(bytearray(b"\\x01") * (16 << 20))\n'
    '    print("allocated", (i + 1) * 16, flush=True)\n'
    'print("NOT KILLED", flush=True)\n'
    "'"
)


def test_memory_max_oom_kills(spawn_in: Spawn) -> None:
    with CgroupV2.create(Limits(memory_max="64M", memory_swap_max=0)) as cg:
        assert cg.read("memory.max").strip() == str(64 * MiB)
        assert cg.read("memory.swap.max").strip() == "0"
        p = spawn_in(cg, ALLOC_256M)
        assert cg.wait_oom(timeout=120, baseline=0)
        assert p.stdout is not None
        out = p.stdout.read()
        assert p.wait(timeout=60) == -9, out
        assert b"NOT KILLED" not in out
        u = cg.usage()
        assert u.oom_kill >= 1 and u.oom_killed
        assert cg.memory_events().oom_kill >= 1
        assert u.memory_peak is not None and 0 < u.memory_peak <= 64 * MiB
        assert "anon" in cg.memory_stat()


def test_pids_max_contains_fork_bomb(spawn_in: Spawn) -> None:
    bomb = (
        f"exec {sys.executable} -c '"
        "import os, time\n"
        "failed = 0\n"
        "while failed < 50:\n"
        "    try:\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(1000)\n"
        "            os._exit(0)\n"
        "    except OSError:\n"
        "        failed += 1\n"
        'print("fork refused", failed, flush=True)\n'
        "time.sleep(1000)\n"
        "'"
    )
    with CgroupV2.create(Limits(pids_max=32)) as cg:
        p = spawn_in(cg, bomb)
        assert p.stdout is not None
        line = p.stdout.readline()
        assert line.startswith(b"fork refused"), line
        cur = int(cg.read("pids.current"))
        assert cur <= 32
        assert len(cg.pids(recursive=True)) == cur
        assert int(cg.read("pids.events").split()[1]) > 0  # "max N"
        cg.kill(timeout=30)
        assert not cg.populated
        assert cg.pids(recursive=True) == []
        p.wait(timeout=30)
        assert p.returncode == -9


def test_cpu_max_throttles(spawn_in: Spawn) -> None:
    # 0.2 CPUs for 2 s of wall time allow 0.4 s of CPU; unthrottled it would be ~2 s
    with CgroupV2.create(Limits(cpu_max=0.2)) as cg:
        assert cg.read("cpu.max").split() == ["20000", "100000"]
        t0 = time.monotonic()
        spawn_in(cg, "while :; do :; done")
        time.sleep(2.0)
        cg.kill()
        wall = time.monotonic() - t0
        u = cg.usage()
        assert u.cpu_time <= 0.2 * wall + 0.05, (wall, u)
        assert u.cpu_time > 0.05, u
        assert u.nr_throttled > 0 and u.throttled_usec > 0, u


def test_freeze_stops_counter_and_thaw_resumes(spawn_in: Spawn, tmp_path: object) -> None:
    counter = os.path.join(str(tmp_path), "counter")
    with CgroupV2.create() as cg:
        spawn_in(
            cg,
            f"i=0; while :; do i=$((i+1)); echo $i > {counter}.t; mv {counter}.t {counter}; done",
        )

        def value() -> int:
            for _ in range(100):
                try:
                    with open(counter) as f:
                        return int(f.read())
                except (FileNotFoundError, ValueError):
                    time.sleep(0.05)
            raise AssertionError("the counter never appeared")

        first = value()
        time.sleep(0.5)
        assert value() > first
        cg.freeze()
        assert cg.events().frozen
        frozen_at = value()
        time.sleep(1.0)
        assert value() == frozen_at
        cg.thaw()
        assert not cg.events().frozen
        time.sleep(1.0)
        assert value() > frozen_at


def test_kill_gets_setsid_escapees(spawn_in: Spawn) -> None:
    with CgroupV2.create() as cg:
        p = spawn_in(
            cg,
            "setsid sleep 1000 & setsid sh -c 'sleep 1000 & sleep 1000' & "
            "(sleep 1000 &) ; echo started; wait",
        )
        assert p.stdout is not None
        assert p.stdout.readline() == b"started\n"
        deadline = time.monotonic() + 30
        while len(cg.pids()) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        pids = cg.pids(recursive=True)
        assert len(pids) >= 5
        sids = {os.getsid(x) for x in pids}
        assert len(sids) >= 2  # some escaped into their own session
        cg.kill()
        assert cg.pids(recursive=True) == []
        for pid in pids:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                continue
            # a zombie waiting for its parent to reap it is dead too
            with open(f"/proc/{pid}/stat") as f:
                assert f.read().split(") ")[1][0] == "Z"


def test_kill_fallback_without_cgroup_kill(spawn_in: Spawn) -> None:
    with CgroupV2.create() as cg:
        child = CgroupV2.create(parent=cg.path)
        p = spawn_in(cg, "setsid sleep 1000 & echo ok; wait")
        assert p.stdout is not None
        assert p.stdout.readline() == b"ok\n"
        q = spawn_in(child, "sleep 1000")
        cg._kill_fallback(timeout=30)
        assert cg.wait_empty(timeout=30)
        assert q.wait(timeout=30) == -9
        child.close()  # already empty: removes only the directory


def test_remove_nested_and_idempotent_close(spawn_in: Spawn) -> None:
    cg = CgroupV2.create()
    inner = CgroupV2.create(parent=cg.path, name="inner")
    spawn_in(inner, "sleep 1000")
    assert cg.populated
    cg.close()
    cg.close()
    assert not os.path.exists(cg.path)
    assert not inner.owned or not os.path.exists(inner.path)
    inner.close()  # nothing left to do


def test_wait_empty_timeout_and_success(spawn_in: Spawn) -> None:
    with CgroupV2.create() as cg:
        p = spawn_in(cg, "sleep 1")
        t0 = time.monotonic()
        assert not cg.wait_empty(timeout=0.3)
        assert 0.25 <= time.monotonic() - t0 < 5
        assert cg.wait_empty(timeout=30)
        p.wait(timeout=5)


def test_open_fd_is_the_directory() -> None:
    with CgroupV2.create() as cg:
        fd = cg.open_fd()
        try:
            assert os.path.samestat(os.fstat(fd), os.stat(cg.path))
        finally:
            os.close(fd)


def test_all_limit_files_written() -> None:
    lim = Limits(
        memory_max="256M",
        memory_high="200M",
        memory_low="8M",
        memory_min="4M",
        memory_oom_group=True,
        cpu_max=CpuMax(quota_usec=50_000, period_usec=200_000),
        cpu_weight=50,
        cpuset_cpus="0",
        cpuset_mems="0",
        pids_max=100,
        io=(IoLimit("/dev/vda", rbps="1M", wiops=100),),
    )
    with CgroupV2.create(lim) as cg:
        assert cg.read("memory.max").strip() == str(256 * MiB)
        assert cg.read("memory.high").strip() == str(200 * MiB)
        assert cg.read("memory.low").strip() == str(8 * MiB)
        assert cg.read("memory.min").strip() == str(4 * MiB)
        assert cg.read("memory.oom.group").strip() == "1"
        assert cg.read("cpu.max").split() == ["50000", "200000"]
        assert cg.read("cpu.weight").strip() == "50"
        assert cg.read("cpuset.cpus").strip() == "0"
        assert cg.read("pids.max").strip() == "100"
        st = os.stat("/dev/vda")
        line = cg.read("io.max").strip()
        assert line.startswith(f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)} ")
        assert "rbps=1048576" in line and "wiops=100" in line
        u = cg.usage()
        assert u.memory_current == 0 and u.pids_current == 0
        psi = cg.pressure("memory")  # CONFIG_PSI=y in the VM's kernel
        assert psi is not None and psi.some.total_usec >= 0


def test_io_weight_or_clear_error() -> None:
    try:
        cg = CgroupV2.create(Limits(io_weight=200))
    except UnsupportedError as e:
        assert "io.weight" in str(e)
        return
    with cg:
        assert "200" in cg.read("io.weight")


def _hugepage_sizes() -> list[tuple[str, int]]:
    out = []
    for n in (
        os.listdir("/sys/kernel/mm/hugepages") if os.path.isdir("/sys/kernel/mm/hugepages") else []
    ):
        kb = int(n.split("-")[1].removesuffix("kB"))
        name = f"{kb >> 20}GB" if kb >= 1 << 20 else f"{kb >> 10}MB"
        out.append((name, kb << 10))
    return sorted(out, key=lambda x: x[1])


def test_hugetlb_limit() -> None:
    sizes = _hugepage_sizes()
    if not sizes:
        pytest.skip("this kernel has no huge page sizes")
    name, size = sizes[0]  # the smallest page size
    with CgroupV2.create(Limits(hugetlb=(HugetlbLimit(name, 2 * size),))) as cg:
        assert cg.read(f"hugetlb.{name}.max").strip() == str(2 * size)


def test_missing_file_rolls_back() -> None:
    with pytest.raises(UnsupportedError, match=r"hugetlb\.3MB\.max"):
        CgroupV2.create(Limits(hugetlb=(HugetlbLimit("3MB", "4M"),)))
    # the autouse fixture checks that nothing was left behind


def test_kernel_rejection_rolls_back() -> None:
    with pytest.raises(SpecError, match=r"cpuset\.cpus"):
        CgroupV2.create(Limits(cpuset_cpus="999"))


def test_concurrent_creates_are_unique() -> None:
    with ThreadPoolExecutor(8) as ex:
        cgs = list(ex.map(lambda _: CgroupV2.create(Limits(pids_max=10)), range(24)))
    try:
        assert len({c.path for c in cgs}) == 24
    finally:
        for c in cgs:
            c.close()
