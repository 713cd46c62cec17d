"""Walks over trees a payload controls: symlinks swapped in while nscg walks them.

The removal and the change report open every directory relative to its
parent with O_NOFOLLOW; a directory swapped for a symlink to a host
directory (a canary here) is never entered, whatever the timing.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from nscg import _tree
from nscg.rootfs import compute_changes

SWAPS = 2000


@pytest.fixture()
def area() -> Iterator[Path]:
    # (on a tmpfs: this host's disk makes each rmdir take milliseconds)
    d = Path(tempfile.mkdtemp(prefix="nscg-walk-test-", dir="/dev/shm"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _tree_with_swapper(area: Path) -> tuple[Path, Path, threading.Event, threading.Thread]:
    canary = area / "canary"
    (canary / "sub").mkdir(parents=True)
    (canary / "keep").write_text("host data")
    (canary / "sub" / "keep").write_text("host data")
    t = area / "t"
    for i in range(200):
        (t / f"d{i}" / "x" / "y").mkdir(parents=True)
        (t / f"d{i}" / "x" / "y" / "f").write_text("payload")
    stop = threading.Event()

    def swap() -> None:
        n = 0
        while not stop.is_set() and n < SWAPS:
            n += 1
            for i in range(0, 200, 7):
                x = t / f"d{i}" / "x"
                try:
                    os.rename(x, t / f"d{i}" / "x.old")
                    os.symlink(canary, x)
                    os.unlink(x)
                    os.rename(t / f"d{i}" / "x.old", x)
                except OSError:
                    pass

    th = threading.Thread(target=swap)
    return t, canary, stop, th


def _canary_intact(canary: Path) -> None:
    assert (canary / "keep").read_text() == "host data"
    assert (canary / "sub" / "keep").read_text() == "host data"


def test_removal_never_follows_a_swapped_in_symlink(area: Path) -> None:
    t, canary, stop, th = _tree_with_swapper(area)
    th.start()
    try:
        for _ in range(3):
            try:
                _tree.rmtree(str(t))
                break
            except OSError:
                continue  # a directory moved under the walk: it stops, never goes elsewhere
    finally:
        stop.set()
        th.join()
    _tree.rmtree(str(t))
    assert not t.exists()
    _canary_intact(canary)


def test_report_never_follows_a_swapped_in_symlink(area: Path) -> None:
    t, canary, stop, th = _tree_with_swapper(area)
    lower = area / "lower"
    lower.mkdir()
    os.symlink(canary, lower / "d0")  # a lower symlink: never looked through either
    th.start()
    try:
        for _ in range(5):
            ch = compute_changes(str(t), [str(lower)])
            assert not any("keep" in p for p in ch.all())
            assert all(p.startswith("/d") for p in ch.all())
    finally:
        stop.set()
        th.join()
    ch = compute_changes(str(t), [str(lower)])
    assert not ch.truncated
    assert "/d0" in ch.modified and "/d0/x/y/f" in ch.added and "/d1/x/y/f" in ch.added
    _canary_intact(canary)


def test_removal_of_unreadable_deep_trees(area: Path) -> None:
    t = area / "t"
    t.mkdir()
    # deeper than the recursion limit, PATH_MAX and RLIMIT_NOFILE; unreadable levels
    fd = os.open(t, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i in range(3000):
            os.mkdir("d", dir_fd=fd)
            os.mkfifo("p", dir_fd=fd)
            os.symlink("/etc", "l", dir_fd=fd)
            nxt = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            if i % 100 == 0:
                os.chmod(f"/proc/self/fd/{fd}", 0)
            os.close(fd)
            fd = nxt
    finally:
        os.close(fd)
    _tree.rmtree(str(t))
    assert not t.exists()
    assert os.path.isdir("/etc")
