"""Enter a running sandbox (like ``docker exec``), from Python and from the CLI.

python examples/enter_running.py
"""

from __future__ import annotations

import select
import subprocess
import sys

import nscg


def main() -> int:
    """Start a long-running sandbox, then run commands inside it."""
    box = nscg.Container().with_hostname("service")
    script = "echo state > /tmp/state; echo ready; exec sleep 60"
    with box.spawn(["sh", "-c", script], stdout=nscg.PIPE) as proc:
        assert proc.stdout is not None
        select.select([proc.stdout], [], [], 20)
        assert proc.stdout.readline() == b"ready\n"
        inner = nscg.Container().entering(proc)
        try:
            r = inner.run(["sh", "-c", "echo $(hostname) $(cat /tmp/state)"],
                          capture_output=True, timeout=30)  # fmt: skip
        finally:
            for ref in inner.join:
                ref.close()
        print(f"python: {(r.stdout or b'').decode().strip()}")
        cli = [sys.executable, "-m", "nscg", "exec", "--pid", str(proc.pid), "--", "hostname"]
        out = subprocess.run(cli, capture_output=True, check=True, timeout=60).stdout
        print(f"cli: {out.decode().strip()}")
        proc.kill()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
