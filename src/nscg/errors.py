"""The exceptions nscg raises.

Every exception derives from :class:`NscgError`, and each also derives from the
built-in exception a ``subprocess`` user would expect (``ValueError`` for a bad
spec, ``OSError`` for a failed system call), so existing ``except`` clauses keep
working.
"""

from __future__ import annotations

import errno as _errno
import os

__all__ = [
    "ExecutableNotFoundError",
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
        stage: object,
        op_index: int = -1,
        filename: str | None = None,
        *,
        detail: str = "",
    ) -> None:
        super().__init__(err, syscall, filename, detail=detail)
        self.stage = stage
        self.op_index = op_index

    def __str__(self) -> str:
        name = getattr(self.stage, "name", str(self.stage))
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
    """The program to run does not exist (or is not executable) in the sandbox."""

    __module__ = "nscg"


class TimeoutExpired(NscgError, TimeoutError):
    """A timeout expired; the whole sandbox was killed.

    Attributes:
        cmd: the argv.
        timeout: the timeout in seconds.
        output / stdout: the partial standard output captured so far (or None).
        stderr: the partial standard error captured so far (or None).
    """

    __module__ = "nscg"

    def __init__(
        self,
        cmd: object,
        timeout: float,
        output: bytes | None = None,
        stderr: bytes | None = None,
    ) -> None:
        super().__init__(f"Command {cmd!r} timed out after {timeout} seconds")
        self.cmd = cmd
        self.timeout = timeout
        self.output = output
        self.stderr = stderr

    @property
    def stdout(self) -> bytes | None:
        """Alias of ``output``, as in :class:`subprocess.TimeoutExpired`."""
        return self.output


class CalledProcessError(NscgError):
    """``check=True`` was given and the process did not exit with status 0.

    Attributes:
        returncode: the exit status (negative for a signal).
        cmd: the argv.
        output / stdout, stderr: captured output, if any.
    """

    __module__ = "nscg"

    def __init__(
        self,
        returncode: int,
        cmd: object,
        output: bytes | None = None,
        stderr: bytes | None = None,
    ) -> None:
        super().__init__(f"Command {cmd!r} returned non-zero exit status {returncode}")
        self.returncode = returncode
        self.cmd = cmd
        self.output = output
        self.stderr = stderr

    @property
    def stdout(self) -> bytes | None:
        """Alias of ``output``, as in :class:`subprocess.CalledProcessError`."""
        return self.output
