"""An overlay whose lowers do not fit in one fsconfig string (255 bytes): one lowerdir+ each."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import nscg
from tests.conftest import need_root, run_as_nobody, static_busybox


@pytest.fixture
def lowers() -> Iterator[list[str]]:
    """Five lowers with 100-byte names (top first); the bottom has a static busybox."""
    top = Path(tempfile.mkdtemp(prefix="nscg-lowers-", dir="/var/tmp"))
    os.chmod(top, 0o755)
    try:
        dirs: list[str] = []
        for i in range(5):
            layer = top / (f"{i}" * 100)
            (layer / "bin").mkdir(parents=True)
            (layer / f"from{i}").write_text(f"{i}\n")
            dirs.append(str(layer))
        shutil.copy(static_busybox(), Path(dirs[0]) / "bin" / "busybox")
        for d in dirs:
            for path in [d, *(os.path.join(d, n) for n in os.listdir(d))]:
                os.chmod(path, 0o755)
        yield list(reversed(dirs))
    finally:
        shutil.rmtree(top)


CHECK = ["/bin/busybox", "sh", "-c", "/bin/busybox cat /from0 /from4"]


@pytest.mark.root
def test_many_long_lowers_as_root(lowers: list[str]) -> None:
    need_root()
    assert len(":".join(lowers)) > nscg.rootfs.FSCONFIG_MAX_STRING
    for idmap in (True, False):
        root = nscg.RootFS.overlay(lowers, idmap_lowers=idmap)
        r = nscg.Container().with_rootfs(root).run(CHECK, capture_output=True)
        assert (r.returncode, r.stdout) == (0, b"0\n4\n"), (idmap, r.stderr)


@pytest.mark.rootless
def test_many_long_lowers_rootless(lowers: list[str]) -> None:
    out = run_as_nobody(
        f"""
        import json, nscg
        r = nscg.Container().with_rootfs(nscg.RootFS.overlay({lowers!r})).run(
            {CHECK!r}, capture_output=True)
        print(json.dumps([r.returncode, r.stdout.decode(), r.stderr.decode()]))
        """
    )
    assert out == [0, "0\n4\n", ""]
