"""The exceptions nscg raises.

Every exception derives from :class:`NscgError`, and each also derives from the
built-in exception a ``subprocess`` user would expect (``ValueError`` for a bad
spec, ``OSError`` for a failed system call, ``PermissionError`` for a program
that is not executable), and :class:`CalledProcessError` and
:class:`TimeoutExpired` from :mod:`subprocess`'s own, so existing ``except``
clauses keep working.
"""

from __future__ import annotations

import errno as _errno
import os
import subprocess
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # (process.py imports this module: no import at run time)
    from nscg.process import Stage

__all__ = [
    "ExecutableNotFoundError",
    "ExecutablePermissionError",
    "NscgError",
    "SpawnError",
    "SpecError",
    "SyscallError",
    "TimeoutExpired",
    "UnsupportedError",
    "CalledProcessError",
]


class NscgError(Exception):
    """Base class of every error raised by nscg."""

    __module__ = "nscg"


class SpecError(NscgError, ValueError):
    """A spec is invalid; raised before anything runs."""

    __module__ = "nscg"


class UnsupportedError(NscgError):
    """The kernel or the host lacks a feature that was asked for.

    The message says which feature is missing and, where there is one, how to
    get it. nscg never falls back to weaker isolation instead.
    """

    __module__ = "nscg"

    def __init__(self, message: str, *, feature: str = "") -> None:
        super().__init__(message)
        #: A short name of the missing feature, e.g. ``"cgroup2.memory"``.
        self.feature = feature


class SyscallError(NscgError, OSError):
    """A system call failed in the parent (Python) side of nscg.

    Attributes:
        errno: the error number.
        strerror: its text.
        filename: the object the call was made on, when there is one.
        syscall: the name of the failing system call.
    """

    __module__ = "nscg"

    def __init__(
        self,
        err: int,
        syscall: str,
        filename: str | None = None,
        *,
        detail: str = "",
    ) -> None:
        text = os.strerror(err) if err else "unknown error"
        if detail:
            text = f"{text} — {detail}"
        if filename is None:
            super().__init__(err, text)
        else:
            super().__init__(err, text, filename)
        self.syscall = syscall

    def __reduce__(self) -> tuple[object, ...]:
        # (OSError's would call __init__ with (errno, strerror[, filename]))
        args = self.args if self.filename is None else (*self.args[:2], self.filename)
        return (_rebuild_oserror, (type(self), args, self.__dict__))

    def __str__(self) -> str:
        base = super().__str__()
        return f"{self.syscall}: {base}" if self.syscall else base


class SpawnError(SyscallError):
    """The child failed while setting up the sandbox, before ``execve``.

    Attributes:
        stage: the setup stage that failed (a :class:`nscg.Stage`).
        op_index: the index of the failing operation within that stage (for
            example the mount number), or -1.
    """

    __module__ = "nscg"

    def __init__(
        self,
        err: int,
        syscall: str,
        stage: Stage,
        op_index: int = -1,
        filename: str | None = None,
        *,
        detail: str = "",
    ) -> None:
        super().__init__(err, syscall, filename, detail=detail)
        self.stage: Stage = stage
        self.op_index = op_index

    def __str__(self) -> str:
        name = self.stage.name
        where = f" (op #{self.op_index}" if self.op_index >= 0 else ""
        if where:
            where += f" {self.filename!r})" if self.filename else ")"
        elif self.filename:
            where = f" ({self.filename!r})"
        code = _errno.errorcode.get(self.errno or 0, str(self.errno))
        return (
            f"{self.syscall} failed at stage {name}{where}: "
            f"[Errno {self.errno} {code}] {self.strerror}"
        )


class ExecutableNotFoundError(NscgError, FileNotFoundError):
    """The program to run does not exist in the sandbox (``ENOENT``), found before ``clone``.

    Raised as :mod:`subprocess` raises ``FileNotFoundError``: nothing found on
    the sandbox's ``PATH``, or an explicit path that does not exist.
    """

    __module__ = "nscg"


class ExecutablePermissionError(NscgError, PermissionError):
    """The program exists in the sandbox but cannot be executed (``EACCES``).

    Raised before ``clone``, as :mod:`subprocess` raises ``PermissionError``:
    the file has no execute permission for the caller, or it is a directory.
    (An ``execve`` refused by the kernel inside the sandbox, for example on a
    ``noexec`` mount, is a :class:`SpawnError` at stage ``EXEC``.)
    """

    __module__ = "nscg"


class TimeoutExpired(NscgError, subprocess.TimeoutExpired, TimeoutError):
    """A timeout expired; after :meth:`nscg.Container.run` the whole sandbox was killed.

    A :class:`subprocess.TimeoutExpired` (``except subprocess.TimeoutExpired``
    catches it) and a :class:`TimeoutError`.

    Attributes:
        cmd: the argv.
        timeout: the timeout in seconds.
        output / stdout: the partial standard output captured so far (or None;
            ``str`` in text mode).
        stderr: the partial standard error captured so far (or None).
    """

    __module__ = "nscg"

    def __init__(
        self,
        cmd: str | Sequence[str],
        timeout: float,
        output: str | bytes | None = None,
        stderr: str | bytes | None = None,
    ) -> None:
        subprocess.TimeoutExpired.__init__(self, cmd, timeout, output, stderr)

    def __reduce__(self) -> tuple[object, ...]:
        # (OSError's would call __init__ with OSError's arguments)
        return (type(self), (self.cmd, self.timeout, self.output, self.stderr))


class CalledProcessError(NscgError, subprocess.CalledProcessError):
    """``check=True`` was given and the process did not exit with status 0.

    A :class:`subprocess.CalledProcessError`: ``except
    subprocess.CalledProcessError`` catches it.

    Attributes:
        returncode: the exit status (negative for a signal).
        cmd: the argv.
        output / stdout, stderr: captured output, if any (``str`` in text mode).
    """

    __module__ = "nscg"

    def __init__(
        self,
        returncode: int,
        cmd: str | Sequence[str],
        output: str | bytes | None = None,
        stderr: str | bytes | None = None,
    ) -> None:
        subprocess.CalledProcessError.__init__(self, returncode, cmd, output, stderr)


def _rebuild_oserror(
    cls: type[SyscallError], args: tuple[object, ...], state: dict[str, object]
) -> SyscallError:
    """Unpickle a :class:`SyscallError` or :class:`SpawnError` as it was pickled."""
    e = cls.__new__(cls, *args)
    OSError.__init__(e, *args)
    e.__dict__.update(state)
    return e
