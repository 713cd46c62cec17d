"""A CI step through the CLI: run a build sandboxed and read the --json result.

python examples/ci_step.py

The shell equivalent, for a CI config::

    nscg run --timeout 600 --json result.json --bind "$PWD" "$PWD" --cwd "$PWD" -- make test
    jq .status,.usage.cpu_user result.json
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path


def main() -> int:
    """Run a tiny 'build' with nscg run --json and report like a CI step would."""
    with tempfile.TemporaryDirectory(dir="/var/tmp") as d:
        work = Path(d)
        (work / "build.sh").write_text("echo compiling; echo artifact > out.bin; exit 0\n")
        result = work / "result.json"
        cmd = [
            sys.executable, "-m", "nscg", "run", "--timeout", "60", "--json", str(result),
            "--bind", d, d, "--cwd", d, "--", "sh", "build.sh",
        ]  # fmt: skip
        status = subprocess.run(cmd, check=False).returncode
        doc = json.loads(result.read_text())
        print(f"step status: {status} (json status {doc['status']})")
        print(f"timed out: {doc['timed_out']}, oom killed: {doc['oom_killed']}")
        print(f"artifact: {(work / 'out.bin').read_text().strip()}")
        return status


if __name__ == "__main__":
    raise SystemExit(main())
