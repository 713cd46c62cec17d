"""Rootless: an unprivileged user builds the same sandbox (a user namespace maps it to root).

python examples/rootless.py       (run as root, it re-runs itself as uid 65534)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import nscg


def main() -> int:
    """Show the ids outside and inside, and that the host stays read-only."""
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            print("needs setpriv (util-linux) to drop to an unprivileged uid", file=sys.stderr)
            return 1
        cmd = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups",
               sys.executable, os.path.abspath(__file__)]  # fmt: skip
        return subprocess.run(cmd, check=False, cwd="/").returncode
    print(f"uid outside: {os.geteuid()}")
    box = nscg.Container().with_hostname("rootless")
    script = "echo uid inside: $(id -u); echo hostname: $(hostname); touch /etc/x || true"
    r = box.run(["sh", "-c", script], capture_output=True, timeout=30, check=True)
    print((r.stdout or b"").decode(), end="")
    print("host writable:", b"Read-only" not in (r.stderr or b""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
