"""Run a command on "this machine, but read-only": RootFS.host().

python examples/readonly_host.py
"""

from __future__ import annotations

import nscg


def main() -> int:
    """Show that the host is visible but read-only, with a private /tmp and /proc."""
    box = nscg.Container()  # RootFS.host() is the default root
    script = (
        "touch /etc/nscg-example 2>/dev/null || echo 'writing /etc: refused'; "
        'echo hello > /tmp/scratch && echo "private /tmp: $(cat /tmp/scratch)"; '
        'echo "processes: $(ls /proc | grep -c "^[0-9]")"; '
        'echo "dev: $(ls /dev | tr "\\n" " ")"'
    )
    result = box.run(["sh", "-c", script], capture_output=True, timeout=30, check=True)
    print((result.stdout or b"").decode(), end="")
    return result.returncode


if __name__ == "__main__":
    raise SystemExit(main())
