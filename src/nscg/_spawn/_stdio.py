"""The child's fds: stdio (PIPE, DEVNULL, files), pass_fds, and the guard's fd slots."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from nscg._native import ffi, lib
from nscg.container import (
    DEVNULL,
    PIPE,
    STDOUT,
    StdioSpec,
)
from nscg.errors import (
    SpecError,
)

if TYPE_CHECKING:
    from nscg._spawn._protocol import _Flight


class _Fds:
    """The fds one spawn opens, kept in C memory, never only on Python's stack.

    Made by C helpers that write into ``slot`` (``nscg_pipe``, ``nscg_open``):
    a signal handler raising right after such a call finds the fd there, and
    the spawn's abort closes it. Slots: the error pipe, the go-ahead pipe,
    then two per stdio stream (a pipe's ends, or /dev/null). The child's ends
    are closed right after the clone; the caller's move to their owner.
    """

    ERR_R, ERR_W = lib.NSCG_SLOT_ERR_R, lib.NSCG_SLOT_ERR_W  # (made by nscg_spawn: plan.make)
    SYNC_R, SYNC_W = lib.NSCG_SLOT_SYNC_R, lib.NSCG_SLOT_SYNC_W
    CGROUP = 10
    N = 11

    def __init__(self) -> None:
        self.slot = ffi.new("int32_t[]", [-1] * self.N)
        self.child_side: list[int] = []  # slot numbers
        #: the parent's idmapped trees (nscg._idmap.open_trees), child side too
        self.trees: Any = ffi.NULL
        self.n_trees = 0

    def pipe(self, i: int, child: int) -> None:
        """A close-on-exec pipe in slots ``i`` (read end) and ``i + 1`` (write end)."""
        r = lib.nscg_pipe(self.slot + i)
        if r < 0:
            raise OSError(-r, os.strerror(-r))
        self.child_side.append(child)

    def open_devnull(self, i: int) -> None:
        r = lib.nscg_open(b"/dev/null", os.O_RDWR | os.O_CLOEXEC, self.slot + i)
        if r < 0:
            raise OSError(-r, os.strerror(-r), os.devnull)
        self.child_side.append(i)

    def close(self, i: int) -> None:
        if self.slot[i] >= 0:  # (an empty slot needs no call, nor a release of the GIL)
            lib.nscg_close(self.slot + i)  # (closed and forgotten in one call)

    def close_child_side(self) -> None:
        for i in self.child_side:
            self.close(i)
        self._close_trees()

    def close_all(self) -> None:
        for i in range(self.N):
            self.close(i)
        self._close_trees()

    def _close_trees(self) -> None:
        for k in range(self.n_trees):
            if self.trees[k] >= 0:
                lib.nscg_close(self.trees + k)


def _stdio(
    spec: StdioSpec, target: int, fds: _Fds, stdout_fd: int | None
) -> tuple[int | None, int | None]:
    """Return (fd the child gets at ``target``, slot of the parent's pipe end)."""
    if spec is None:
        # only if open in the parent, checked now: a pipe made for a later
        # stream may take this number once it is free
        try:
            os.fstat(target)
        except OSError:
            return None, None
        return target, None
    base = 4 + 2 * target
    if spec == PIPE:
        child, parent = (base, base + 1) if target == 0 else (base + 1, base)
        fds.pipe(base, child)
        return int(fds.slot[child]), parent  # (the caller makes a file object of it)
    if spec == DEVNULL:
        fds.open_devnull(base)
        return int(fds.slot[base]), None
    if spec == STDOUT:
        if target != 2:
            raise SpecError("STDOUT is only valid for stderr")
        return stdout_fd, None
    if isinstance(spec, int):
        if spec < 0:
            raise SpecError(f"invalid fd {spec} for {('stdin', 'stdout', 'stderr')[target]}")
        return spec, None
    if hasattr(spec, "fileno"):
        return spec.fileno(), None
    raise SpecError(f"invalid stdio spec {spec!r}")


def _fill_stdio(flight: _Flight, stdio: tuple[StdioSpec, ...], pass_fds: Sequence[int]) -> int:
    """The child's fds (stdio, pass_fds) into the plan; return their number."""
    p, fds = flight.p, flight.fds
    plan = p.plan
    fdmap: list[tuple[int, int]] = []
    out_child: int | None = None
    for target, spec in enumerate(stdio):
        child_fd, parent = _stdio(spec, target, fds, out_child)
        if target == 1:
            out_child = child_fd
        if child_fd is not None:
            fdmap.append((child_fd, target))
        if parent is not None:
            # (no call between taking the fd and the file owning it: a
            # handler's exception lands after open(), which then closes it)
            fd = fds.slot[parent]
            fds.slot[parent] = -1
            flight.files[target] = open(fd, "wb" if target == 0 else "rb", buffering=0)  # noqa: SIM115
    for fd in pass_fds:
        if not isinstance(fd, int) or fd < 0:
            raise SpecError(f"invalid fd in pass_fds: {fd!r}")
        if fd in (0, 1, 2):
            raise SpecError("pass_fds must not contain 0, 1 or 2 (use stdin/stdout/stderr)")
        try:
            os.fstat(fd)
        except OSError:
            raise SpecError(f"fd {fd} in pass_fds is not open") from None
        fdmap.append((fd, fd))
    plan.n_fdmap = len(fdmap)
    if fdmap:
        plan.fdmap = p.array("struct nscg_fdmap[]", fdmap)
    plan.fd_floor = max([3] + [dst + 1 for _, dst in fdmap])
    return len(fdmap)
