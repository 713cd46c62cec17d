"""Run a command with no network, its own hostname and its own pid namespace.

python examples/isolated_command.py
"""

from __future__ import annotations

import nscg


def main() -> int:
    """Run a small shell script in a sandbox and print what it sees."""
    box = nscg.Container().with_hostname("example")
    script = (
        'echo "hostname: $(hostname)"; '
        'echo "my pid: $$"; '
        "echo \"network interfaces: $(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ')\"; "
        "id -u"
    )
    result = box.run(["sh", "-c", script], capture_output=True, timeout=30, check=True)
    print((result.stdout or b"").decode(), end="")
    print(f"exit status {result.returncode}, wall time {result.wall_time * 1000:.1f} ms")
    return result.returncode


if __name__ == "__main__":
    raise SystemExit(main())
