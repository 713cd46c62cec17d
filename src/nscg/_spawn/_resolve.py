"""Resolution: the payload's environment and executable, on the host or in the sandbox's root."""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence

from nscg.container import (
    DEFAULT_PATH,
    Container,
)
from nscg.errors import (
    ExecutableNotFoundError,
    ExecutablePermissionError,
    SpecError,
)
from nscg.namespaces import Namespace


# ------------------------------------------------------------------ resolution
def _default_env(uid_inside: int) -> dict[str, str]:
    return {
        "PATH": DEFAULT_PATH,
        "HOME": "/root" if uid_inside == 0 else "/",
        "TERM": os.environ.get("TERM", "dumb"),
    }


def resolve_executable(
    name: str, path_var: str, executable: str | None, root: str = "/", cwd: str | None = None
) -> str:
    """Find the program to run, as the kernel will see it, before anything is cloned.

    As ``execvp`` (and so :mod:`subprocess`) does: the first executable file
    on PATH wins; when there is none but a candidate exists (a file without
    execute permission, a directory), the error is EACCES, else ENOENT.

    Raises:
        ExecutableNotFoundError: no candidate exists (ENOENT).
        ExecutablePermissionError: one exists, but none is an executable file (EACCES).
    """
    cand: list[str]
    target = executable or name
    if "/" in target:
        if not target.startswith("/"):
            target = os.path.join(cwd or os.getcwd(), target)
        cand = [target]
    else:
        cand = [os.path.join(d or ".", target) for d in path_var.split(":")]
    denied: str | None = None
    for c in cand:
        host = c if root == "/" else os.path.join(root, c.lstrip("/"))
        if os.path.isfile(host) and os.access(host, os.X_OK):
            return c
        if denied is None and os.path.exists(host):
            denied = c
    if denied is not None:
        raise _not_executable(denied, "")
    where = f"on PATH {path_var!r}" if "/" not in (executable or name) else ""
    raise ExecutableNotFoundError(
        errno.ENOENT, f"executable {target!r} not found {where}".rstrip(), target
    )


def _not_executable(path: str, where: str) -> ExecutablePermissionError:
    """EACCES for a program that exists (in the sandbox) but cannot be executed."""
    return ExecutablePermissionError(
        errno.EACCES,
        f"{path!r}{where} is not an executable file (a directory, or no execute permission)",
        path,
    )


def _caller_cwd_join(target: str) -> list[str]:
    """``target`` under the caller's working directory (none if it has none)."""
    try:
        return [os.path.join(os.getcwd(), target)]
    except OSError:  # (deleted)
        return []


def _resolve_in_rootfs(c: Container, name: str, path_var: str, executable: str | None) -> str:
    """resolve_executable, in the sandbox's root when it has its own (see RootFS.host_paths)."""
    if c.rootfs is None:
        # entering a sandbox with a root of its own: look inside that root
        root = next((r for r in c.join if r.kind == Namespace.NONE), None)
        where = "/" if root is None else f"/proc/self/fd/{root.fileno()}"
        return resolve_executable(name, path_var, executable, root=where, cwd=c.cwd)
    target = executable or name
    if "/" in target:
        if target.startswith("/"):
            cand = [target]
        elif c.cwd is not None:
            cand = [os.path.join(c.cwd, target)]
        else:  # the caller's working directory if the root has it (NSCG_MOUNTS_KEEP_CWD), or /
            cand = [*_caller_cwd_join(target), os.path.join("/", target)]
    else:
        cand = [os.path.join(d or ".", target) for d in path_var.split(":")]
    denied: str | None = None
    for sandbox_path in cand:
        hosts = c.rootfs.host_paths(os.path.normpath(sandbox_path))
        if hosts is None:
            if "/" in target and sandbox_path == cand[-1]:
                return sandbox_path  # made by the plan: the child's execve will tell
            continue
        if any(os.path.isfile(h) and os.access(h, os.X_OK) for h in hosts):
            return sandbox_path
        if denied is None and any(os.path.exists(h) for h in hosts):
            denied = sandbox_path
    if denied is not None:
        raise _not_executable(denied, " in the sandbox's root")
    where = f" {'on PATH ' + repr(path_var) if '/' not in target else ''}".rstrip()
    raise ExecutableNotFoundError(
        errno.ENOENT, f"executable {target!r} not found in the sandbox's root{where}", target
    )


def _checked_argv(argv: Sequence[str]) -> list[str]:
    if isinstance(argv, (str, bytes)) or not argv:
        raise SpecError("argv must be a non-empty sequence of strings")
    out = [os.fsdecode(a) if isinstance(a, bytes) else a for a in argv]
    for a in out:
        if not isinstance(a, str) or "\0" in a:
            raise SpecError(f"invalid argument {a!r}")
    return out
