"""Load and leaks: many threads, many live sandboxes; everything returns to baseline."""

from __future__ import annotations

import concurrent.futures as cf
import gc
import os
import resource
import time

import pytest

import nscg
from nscg import Container
from tests.conftest import children, mount_count, open_fds

THREADS = 8
SPAWNS = 500


def _tmp_entries() -> set[str]:
    return {n for n in os.listdir("/tmp") if "nscg" in n}


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@pytest.mark.slow
def test_8_threads_500_spawns_mixed_success_and_failure() -> None:
    c = Container()
    Container().run(["true"])  # warm caches (compiled filter, pools)
    gc.collect()
    fds, kids, mounts, tmp = open_fds(), set(children()), mount_count(), _tmp_entries()
    rss0 = _rss_kb()

    def worker(t: int) -> tuple[int, list[str]]:
        ok, errors = 0, []
        for i in range(SPAWNS):
            kind = i % 5
            try:
                if kind == 0:
                    c.with_cwd("/nonexistent").run(["true"])
                    errors.append("no SpawnError for a missing cwd")
                elif kind == 1:
                    c.run(["definitely-missing-program"])
                    errors.append("no ExecutableNotFoundError")
                elif kind == 2:
                    with pytest.raises(nscg.TimeoutExpired):
                        c.run(["sleep", "5"], timeout=0.01)
                    ok += 1
                else:
                    r = c.run(["echo", f"{t}.{i}"], capture_output=True)
                    if r.stdout != f"{t}.{i}\n".encode():
                        errors.append(f"bad output {r}")
                    ok += 1
            except nscg.SpawnError:
                if kind != 0:
                    raise
                ok += 1
            except nscg.ExecutableNotFoundError:
                if kind != 1:
                    raise
                ok += 1
        return ok, errors

    with cf.ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(worker, range(THREADS), timeout=1200))
    assert [e for _ok, errs in results for e in errs] == []
    assert sum(ok for ok, _ in results) == THREADS * SPAWNS
    gc.collect()
    deadline = time.monotonic() + 5
    while set(children()) != kids and time.monotonic() < deadline:
        time.sleep(0.05)
    assert open_fds() == fds
    assert set(children()) == kids
    assert mount_count() == mounts
    assert _tmp_entries() == tmp
    growth = _rss_kb() - rss0
    print(f"\nRSS growth after {THREADS * SPAWNS} spawns: {growth} KiB")
    assert growth < 64 * 1024  # bounded: well under 64 MiB


@pytest.mark.slow
def test_100_sandboxes_alive_at_once() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1024:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    Container().run(["true"])
    gc.collect()
    fds, kids = open_fds(), set(children())
    rss0 = _rss_kb()
    procs = [Container().spawn(["sleep", "60"]) for _ in range(100)]
    try:
        rss_live = _rss_kb()
        fds_live = len(open_fds()) - len(fds)
        print(
            f"\n100 live sandboxes: {(rss_live - rss0) / 100:.1f} KiB RSS and "
            f"{fds_live / 100:.1f} fds each in the parent"
        )
        assert fds_live <= 100  # one pidfd per sandbox
        assert all(p.poll() is None for p in procs)
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()
            p.close()
    assert open_fds() == fds
    assert set(children()) == kids
