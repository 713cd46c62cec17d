"""``nscg run --image`` with bubblewrap's filesystem options: they go on top of the image."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_filesystem_options_apply_on_top_of_the_image(images_dir: Path, store_dir: Path) -> None:
    # (the test image's busybox has few applets: the shell's own builtins; its User is
    # not root, --uid 0 reads the 0700 tmpfs and the 0600 file)
    script = "echo /scratch/*; stat -c '%a' /scratch; read x < /etc/nscg-data; echo $x $X"
    r = subprocess.run(
        [sys.executable, "-m", "nscg", "run", "--store", str(store_dir), "--image",
         str(images_dir / "layout"), "--perms", "0700", "--tmpfs", "/scratch", "--dir",
         "/scratch/d", "--ro-bind-data", "0", "/etc/nscg-data", "--setenv", "X", "1",
         "--uid", "0", "--", "sh", "-c", script],
        input=b"from fd 0\n", capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().splitlines() == ["/scratch/d", "700", "from fd 0 1"]
