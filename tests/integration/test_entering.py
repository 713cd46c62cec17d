"""Entering a running sandbox lands in its root, not in its mount namespace's root mount."""

from __future__ import annotations

import select

import nscg


def test_entering_a_sandbox_with_a_rootfs_sees_its_root() -> None:
    box = nscg.Container().with_rootfs(nscg.RootFS.host())
    script = "echo inside > /tmp/marker; echo ready; exec sleep 60"
    with box.spawn(["sh", "-c", script], stdout=nscg.PIPE) as proc:
        assert proc.stdout is not None
        select.select([proc.stdout], [], [], 20)
        assert proc.stdout.readline() == b"ready\n"
        r = proc.run_inside(["sh", "-c", "cat /tmp/marker; touch /etc/x 2>&1 || true"],
                          capture_output=True, timeout=30)  # fmt: skip
        assert r.stdout is not None
        assert r.stdout.startswith(b"inside\n"), r
        assert b"Read-only" in r.stdout
        proc.kill()
