"""Run several sandboxes concurrently from asyncio with ``await proc.wait_async()``.

python examples/asyncio_wait.py
"""

from __future__ import annotations

import asyncio
import time

import nscg


async def job(n: int) -> int:
    """Start a sandbox and wait for it on the event loop (through its pidfd)."""
    box = nscg.Container().with_hostname(f"job{n}")
    with box.spawn(["sh", "-c", f"sleep 0.5; exit {n}"]) as proc:
        return await proc.wait_async()


async def amain() -> int:
    """Wait for three half-second sandboxes at once."""
    t0 = time.monotonic()
    statuses = await asyncio.gather(*(job(n) for n in range(3)))
    elapsed = time.monotonic() - t0
    print(f"statuses: {statuses}")
    print(f"concurrent: {elapsed < 1.4}")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(amain()))
