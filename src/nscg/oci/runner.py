"""``nscg-oci run``: a bundle's container in the foreground, its state kept under ``--root``.

The steps, as runc's ``run`` without ``--detach``: read the bundle, take the
container id (its state directory), start the process, write the pid file
and ``state.json``, pass signals on to the process, wait for it, remove the
state, and exit with its status (128 + the signal number if it was killed).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import select
import signal
from collections.abc import Callable, Iterable
from typing import Any

from nscg.errors import (
    ExecutableNotFoundError,
    ExecutablePermissionError,
    NscgError,
    SpawnError,
    SpecError,
    UnsupportedError,
)
from nscg.oci.spec import SPEC_VERSION, Bundle, load
from nscg.oci.state import CommandFailed, ContainerState, process_start_time

__all__ = ["run_bundle"]


def _load(bundle: str, rootless: bool, cgroup_manager: str | None) -> Bundle:
    try:
        b = load(bundle, rootless=rootless)
    except (SpecError, UnsupportedError) as e:
        raise CommandFailed(str(e)) from None
    if b.container.cgroup is not None:
        if cgroup_manager == "disabled":
            raise CommandFailed(
                "linux.resources: cgroups are disabled (--cgroup-manager=disabled) but the "
                "spec sets limits"
            )
        if cgroup_manager == "systemd":
            raise CommandFailed(
                "the systemd cgroup manager is not supported: use --cgroup-manager=cgroupfs"
            )
    return b


def _exec_message(e: OSError, argv0: str) -> str:
    if isinstance(e, ExecutableNotFoundError):
        if "/" in argv0:
            return f'exec: "{argv0}": stat {argv0}: no such file or directory'
        return f'exec: "{argv0}": executable file not found in $PATH'
    return f'exec: "{argv0}": permission denied'


def _write_pid_file(path: str, pid: int) -> None:
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.tmp")
    with open(tmp, "w") as f:
        f.write(str(pid))  # (no newline: clients read it as is)
    os.rename(tmp, path)


def _prepare_process(b: Bundle) -> None:
    """What the Container has no field for, set on this process and inherited by the child."""
    os.umask(0o022 if b.umask is None else b.umask)
    if b.oom_score_adj is not None:
        try:
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write(str(b.oom_score_adj))
        except OSError as e:
            raise CommandFailed(
                f"process.oomScoreAdj: cannot set {b.oom_score_adj}: {e.strerror} "
                "(lowering it needs CAP_SYS_RESOURCE)"
            ) from None


def run_bundle(
    st: ContainerState,
    *,
    bundle: str,
    rootless: bool,
    pid_file: str | None,
    cgroup_manager: str | None,
    preserve_fds: int,
    log_debug: Callable[[str], None],
    forwarded: Iterable[int],
) -> int:
    """Run the bundle's container in the foreground and return the exit status.

    Raises:
        CommandFailed: the bundle is invalid or unsupported, the id is taken, or
            the container could not start (runc's wording).
    """
    b = _load(bundle, rootless, cgroup_manager)
    for path, why in b.ignored:
        log_debug(f"{path}: ignored: {why}")
    if not st.create_dir():
        raise CommandFailed("container with given ID already exists")
    try:
        return _run(st, b, pid_file, preserve_fds, forwarded)
    finally:
        st.remove()


def _run(
    st: ContainerState,
    b: Bundle,
    pid_file: str | None,
    preserve_fds: int,
    forwarded: Iterable[int],
) -> int:
    _prepare_process(b)
    try:
        container, refs = b.open_joins()
    except NscgError as e:
        raise CommandFailed(f"linux.namespaces: {e}") from None
    try:
        try:
            proc = container.spawn(list(b.args), pass_fds=range(3, 3 + preserve_fds))
        except (ExecutableNotFoundError, ExecutablePermissionError) as e:
            raise CommandFailed(
                f"unable to start container process: {_exec_message(e, b.args[0])}"
            ) from None
        except SpawnError as e:
            raise CommandFailed(f"unable to start container process: {e}") from None
        except NscgError as e:  # (a spec the host refuses, a system call failed)
            raise CommandFailed(str(e)) from None
    finally:
        for r in refs:
            r.close()
    with proc:
        state: dict[str, Any] = {
            "ociVersion": SPEC_VERSION,
            "id": st.id,
            "pid": proc.pid,
            "status": "running",
            "bundle": b.bundle,
            "rootfs": b.root_path,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "owner": "",
            "_start": process_start_time(proc.pid),
        }
        if b.annotations:
            state["annotations"] = dict(b.annotations)
        st.write(state)
        if pid_file:
            _write_pid_file(pid_file, proc.pid)
        status = _wait_forwarding(proc, forwarded)
    return status


def _wait_forwarding(proc: Any, forwarded: Iterable[int]) -> int:
    """Wait for the process, passing on the signals this process gets (runc's forwarding)."""
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    sigs = list(forwarded)
    old = {s: signal.signal(s, lambda *_: None) for s in sigs}
    old_fd = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    try:
        while proc.poll() is None:
            ready, _, _ = select.select([proc.fileno(), r], [], [])
            if r in ready:
                for num in os.read(r, 64):
                    if proc.returncode is None:
                        with contextlib.suppress(ProcessLookupError):
                            proc.send_signal(num)
        code: int = proc.wait()
    finally:
        signal.set_wakeup_fd(old_fd)
        for s, h in old.items():
            signal.signal(s, h)
        os.close(r)
        os.close(w)
    return 128 - code if code < 0 else code
