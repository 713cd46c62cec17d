"""Spawning from many threads at once: correct results, no leaks, no deadlock."""

from __future__ import annotations

import concurrent.futures as cf

import pytest

import nscg
from nscg import Container
from tests.conftest import children, open_fds

THREADS = 8
SPAWNS = 200


@pytest.mark.slow
def test_8_threads_200_spawns_each() -> None:
    c = Container()
    fds_before = open_fds()

    def worker(t: int) -> list[str]:
        errors = []
        for i in range(SPAWNS):
            token = f"{t}-{i}"
            if i % 10 == 9:  # mix in failures
                try:
                    c.with_cwd("/nonexistent").run(["true"])
                    errors.append(f"{token}: no SpawnError")
                except nscg.SpawnError:
                    pass
                continue
            r = c.run(["echo", token], capture_output=True)
            if r.returncode != 0 or r.stdout != f"{token}\n".encode():
                errors.append(f"{token}: {r}")
        return errors

    with cf.ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(worker, range(THREADS), timeout=600))
    assert [e for errs in results for e in errs] == []
    assert open_fds() == fds_before
    assert children() == [] or all(not _is_zombie(p) for p in children())


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False


def test_no_zombie_after_many_spawns() -> None:
    for _ in range(20):
        Container().run(["true"])
    assert [p for p in children() if _is_zombie(p)] == []
