"""The parent's side of a spawn: validate, resolve, flatten into one C plan, run it.

Everything that needs thinking happens here, in the parent; the child only
executes the flat ``struct nscg_plan`` (see ``_native/child.c``).

The package, one part per module, in the order a spawn uses them: ``_caller`` (what the
caller has), ``_resolve`` (environment, executable), ``_modes`` (how it runs), ``_hooks``
(the Protocols of the parts that hook into a spawn: a network, a root made per spawn),
``_idmaps``, ``_etc`` (/etc files), ``_plan`` (the flat C plan, prepared once per spec),
``_stdio`` (the child's fds), ``_protocol`` (after the clone, and the guard that owns a
spawn) and ``_errors`` (the child's failure report). The entry points (:func:`spawn`,
:func:`run`) are here.
"""

from __future__ import annotations

import signal
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import attrs

from nscg import _idmap
from nscg._native import ffi, lib
from nscg._rootfs_run import RootfsRun
from nscg._rootfs_run import _current as _rootfs_labels
from nscg._spawn._caller import _init_fd, _own_pidfd, which
from nscg._spawn._errors import (
    _REC_SIZE,
    _clone_error,
    _raise_child_error,
    _read_record,
    userns_restriction,
)
from nscg._spawn._hooks import ParentHook, RootRun
from nscg._spawn._modes import Caller, Mode, ModeChoice, _mode_of, choose_mode, mode_flags
from nscg._spawn._plan import _STALE_TRIES, _Plan, _prepare, _Prepared, _prepared, _Stale
from nscg._spawn._protocol import (
    _AFTER_CLONE,
    _abandoned_pending,
    _Flight,
    _in_flight,
    _sweep_flights,
    nscg_signal_raised,
)
from nscg._spawn._resolve import _checked_argv, _default_env, _resolve_in_rootfs, resolve_executable
from nscg._spawn._stdio import _Fds, _fill_stdio
from nscg._textmode import checked_input, text_codec
from nscg.container import (
    PIPE,
    Container,
    StdioSpec,
    _env_conv,
)
from nscg.errors import (
    SpecError,
    TimeoutExpired,
)
from nscg.process import AnyProcess, Result, Stage, _shielded, reap_abandoned

__all__ = [  # (private to nscg: what the rest of nscg, the tests and the docs use)
    "Caller",
    "Mode",
    "ModeChoice",
    "ParentHook",
    "choose_mode",
    "mode_flags",
    "nscg_signal_raised",
    "resolve_executable",
    "run",
    "spawn",
    "userns_restriction",
    "which",
    "with_call",
    "_REC_SIZE",
    "_Flight",
    "_in_flight",
    "_init_fd",
    "_own_pidfd",
    "_Plan",
    "_Prepared",
    "_default_env",
    "_prepare",
    "_prepared",
    "_per_call",
    "_PER_CALL_MAX",
    "_raise_child_error",
    "_read_record",
]


def spawn(
    c: Container,
    argv: Sequence[str],
    *,
    stdin: StdioSpec = None,
    stdout: StdioSpec = None,
    stderr: StdioSpec = None,
    pass_fds: Sequence[int] = (),
    executable: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    text: bool | None = None,
    encoding: str | None = None,
    errors: str | None = None,
    universal_newlines: bool | None = None,
    _fault: tuple[Stage, int, int] | None = None,
    _extra_flags: int = 0,
    _kill_if_dropped: bool = False,
) -> AnyProcess:
    """Spawn ``argv`` in the sandbox ``c`` (see :meth:`Container.spawn`).

    ``_fault`` (stage, errno, op index) makes that stage fail on purpose and
    ``_extra_flags`` adds NSCG_F_* flags: both are for tests only.
    ``_kill_if_dropped``: the Process is killed if dropped unclosed (run()'s).
    """
    started = time.monotonic()  # (the Process's wall_time counts from here)
    codec = text_codec(text, encoding, errors, universal_newlines)
    given = with_call(c, env, cwd)
    for attempt in range(_STALE_TRIES):
        # a prepared plan whose assumptions no longer hold (the C call checks
        # them right before its clone: see _Prepared.checks) is made again
        prep = _prepare(given, fresh=attempt > 0)
        c = prep.own if prep.own is not None else given
        root: RootRun | None = None
        labels: Any = None
        if prep.per_spawn_root:
            # overlays: upper and work directories of this spawn's own
            maps = (prep.maps[0], prep.maps[1]) if prep.idmap and prep.maps is not None else None
            root = RootfsRun(c, prep.etc, maps)
        elif prep.prims is not None:
            labels = _rootfs_labels
            labels.run = (c, prep.prims)  # for failure labels, during this spawn
        try:
            return _spawn(
                prep,
                c,
                argv,
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                pass_fds=pass_fds,
                executable=executable,
                _codec=codec,
                _fault=_fault,
                _extra_flags=_extra_flags,
                _root=root,
                _kill_if_dropped=_kill_if_dropped,
                _started=started,
                # (the last try: the plan as just prepared, as before the checks)
                _checks=attempt < _STALE_TRIES - 1,
            )
        except _Stale:
            if root is not None:
                root.cleanup()
        except BaseException:
            if root is not None:
                root.cleanup()
            raise
        finally:
            if labels is not None:
                labels.run = None
    raise AssertionError("unreachable: the last try does not check")  # pragma: no cover


# ------------------------------------------------------- per-call arguments
#: Containers made for per-call ``env``/``cwd``: (id of the spec, env, cwd) ->
#: (weak ref to the spec, the derived spec), so that repeated calls with the
#: same arguments reuse one derived spec and its prepared plan
_per_call: dict[tuple[int, Any, str | None], tuple[Any, Container]] = {}
_PER_CALL_MAX = 32


def with_call(c: Container, env: Mapping[str, str] | None, cwd: str | None) -> Container:
    """``c`` with this call's ``env`` and ``cwd`` (each None: the spec's own).

    A call without them runs ``c`` itself (its prepared plan is cached with
    it); with them, a derived spec, kept for the next call with the same ones.

    Raises:
        SpecError: an invalid environment or working directory.
    """
    if env is None and cwd is None:
        return c
    env_items = _env_conv(env) if env is not None else None
    key = (id(c), env_items, cwd)
    ent = _per_call.get(key)
    if ent is not None and ent[0]() is c:
        return ent[1]
    changes: dict[str, Any] = {}
    if env_items is not None:
        changes["env"] = env_items
    if cwd is not None:
        if not isinstance(cwd, str):
            raise SpecError(f"cwd must be a str, got {cwd!r}")
        changes["cwd"] = cwd
    derived = attrs.evolve(c, **changes)
    # (no lock, so that a signal handler's spawn cannot deadlock on it: the
    # oldest entries go; another thread evicting at the same time is harmless)
    while len(_per_call) >= _PER_CALL_MAX:
        try:
            _per_call.pop(next(iter(_per_call)), None)
        except (StopIteration, RuntimeError):  # emptied, or resized meanwhile
            break
    _per_call[key] = (weakref.ref(c), derived)
    return derived


#: tries of a spawn whose prepared plan turned out stale (host sockets churning)


class _Run(NamedTuple):
    """One spawn's facts its steps after the clone need (for the failure messages too)."""

    c: Container
    argv: list[str]
    path: str
    #: the program was looked up before the clone (else left to execve)
    checked: bool
    executable: str | None
    prep: _Prepared
    flags: int
    fault: tuple[Stage, int, int] | None


def _spawn(
    prep: _Prepared,
    c: Container,
    argv: Sequence[str],
    *,
    stdin: StdioSpec = None,
    stdout: StdioSpec = None,
    stderr: StdioSpec = None,
    pass_fds: Sequence[int] = (),
    executable: str | None = None,
    _codec: tuple[str, str] | None = None,
    _fault: tuple[Stage, int, int] | None = None,
    _extra_flags: int = 0,
    _root: RootRun | None = None,
    _kill_if_dropped: bool = False,
    _checks: bool = True,
    _started: float | None = None,
) -> AnyProcess:
    args = _checked_argv(argv)
    _before_spawn(prep)
    flags = prep.flags | _extra_flags
    if _fault is not None and _fault[0] == Stage.ID_MAPS:
        # the test hook is on the Python side: the Python-steps mode
        flags &= ~(lib.NSCG_F_PARENT_MAPS | lib.NSCG_F_WAIT_EXEC)
    prog = executable or args[0]
    # An absolute path run vfork-style is left to execve: a missing program
    # costs a clone that fails, not namespaces, and is told apart below.
    checked = not (flags & lib.NSCG_F_VFORK and prog.startswith("/") and c.rootfs is None)
    path = _resolve_in_rootfs(c, args[0], prep.path_var, executable) if checked else prog

    run = _Run(c, args, path, checked, executable, prep, flags, _fault)
    p, idmap_binds, n_slots = _spawn_plan(run, _root, _checks)
    plan = p.plan

    # From here on one guard owns everything the spawn makes (the lifetime
    # rule: see _Flight); its abort() is the only failure path.
    flight = _Flight(p)
    try:
        n_fds = _fill_stdio(flight, (stdin, stdout, stderr), pass_fds)
        if n_slots:
            flight.fds.trees = p.array("int32_t[]", [-1] * n_slots)
            flight.fds.n_trees = n_slots
            lowers = _root.take_lower_trees() if _root is not None else ()
            _idmap.open_trees(p, plan, n_slots, idmap_binds, prep.maps, flight.fds.trees, lowers)
        # the child's working memory for its fds (abi.h: nscg_spawn_state.scratch)
        n_scratch = n_fds + 2 * len(prep.joins) + n_slots + lib.NSCG_SCRATCH_CHANNELS
        p.state.scratch = p.array("int32_t[]", n_scratch)
        p.state.n_scratch = n_scratch
        plan.flags = _fill_spawn(flight, run)

        # the one C call: the checks, the pipes, the status page (with a pid
        # namespace), the clone, and in the in-C mode everything up to the exec
        lib.nscg_spawn(plan, flight.out)
        _cloned(flight, c)
        _AFTER_CLONE[_mode_of(flags)](flight, run)
        flight.close_err()
        proc = flight.process(args, c, prep.pid_ns, _kill_if_dropped, _started)
        if _codec is not None:
            proc._text_mode(*_codec)
        if _root is not None:
            _root.attach(proc)  # (its temp dirs: removed by spawn() if aborted)
        flight.done()
    except BaseException:
        flight.abort()
        raise
    return proc


def _before_spawn(prep: _Prepared) -> None:
    """Checks and chores before a spawn: closed joins; abandoned sandboxes, dropped guards."""
    for r in prep.joins:
        if r.closed:
            raise SpecError(f"namespace reference {r!r} is closed")
    if _abandoned_pending():
        reap_abandoned()
    if _in_flight:
        _sweep_flights()


def _spawn_plan(run: _Run, root: RootRun | None, checks: bool) -> tuple[_Plan, list[Any], int]:
    """This spawn's copy of the prepared plan: (it, its idmapped binds, its bind slots)."""
    prep, c = run.prep, run.c
    p = prep.new_plan()
    plan = p.plan
    plan.path = p.cstr(run.path)
    plan.argv = p.cstr_array(run.argv)
    idmap_binds, n_slots = prep.idmap_binds, prep.n_slots
    if root is not None:
        root.fill(p, plan)
        if prep.idmap and c.rootfs is not None:
            idmap_binds = _idmap.binds_to_idmap(c.rootfs.ops, root.prims)
        n_slots = _idmap.mark(plan, root.prims, idmap_binds)
    if not checks:
        plan.checks = 0
    if run.fault is not None:
        f = run.fault
        plan.fault.stage, plan.fault.err, plan.fault.index = int(f[0]), f[1], f[2]
    return p, idmap_binds, n_slots


def _cloned(flight: _Flight, c: Container) -> None:
    """Right after nscg_spawn: the child's fds closed; a stale plan, a failed clone raise."""
    out = flight.out
    if out.err_closed:
        flight.fds.slot[_Fds.ERR_W] = -1  # closed by the C call
    flight.fds.close_child_side()
    if out.stale:
        raise _Stale  # (nothing was cloned)
    if out.err:
        raise _clone_error(out.err, ffi.string(out.syscall).decode(), c.namespaces)
    flight.check_interrupted()


def _fill_spawn(flight: _Flight, run: _Run) -> int:
    """The rest of this spawn's plan (joins, cgroup, pipes, parent death); its flags."""
    p, fds, c, flags = flight.p, flight.fds, run.c, run.flags
    plan = p.plan
    joins = run.prep.joins
    if joins:
        jn = p.array("struct nscg_join[]", len(joins))
        for i, r in enumerate(joins):
            jn[i].fd, jn[i].nstype = r.fileno(), int(r.kind)
        plan.joins = jn
        plan.n_join = len(joins)
    if c.cgroup is not None:
        # created (limits written) before anything runs; raises the clear
        # UnsupportedError on a host that cannot give what was asked
        from nscg.cgroups import CgroupV2

        cg_spec = c.cgroup

        def make_cgroup() -> None:
            # (shielded: a handler's exception cannot lose the new cgroup)
            flight.cgroup = CgroupV2.create(cg_spec.limits, parent=cg_spec.parent)
            fds.slot[fds.CGROUP] = flight.cgroup.open_fd()

        _shielded(make_cgroup, flight.track_steps)
        fds.child_side.append(fds.CGROUP)
        plan.cgroup_fd = fds.slot[fds.CGROUP]
    # the error and go-ahead pipes: made by the C call into our slots,
    # each end closed there as soon as it is done with
    make = 0 if flags & lib.NSCG_F_VFORK else lib.NSCG_MAKE_ERR_PIPE
    if flags & lib.NSCG_F_WAIT_PARENT:
        make |= lib.NSCG_MAKE_SYNC_PIPE
    plan.make = make
    plan.slots = fds.slot
    if c.die_with_parent:
        plan.pdeathsig = signal.SIGKILL
        plan.parent_pidfd = _own_pidfd()
    if not c.die_with_parent or threading.get_ident() == threading.main_thread().ident:
        # The parent-death signal follows the thread that cloned; the main
        # thread lives as long as the interpreter, so it can clone itself
        # (no hop to a spawner thread). Other threads hand off to one.
        flags |= lib.NSCG_F_NO_SPAWNER_THREAD
    if flags & lib.NSCG_F_INIT:
        plan.init_fd = _init_fd()
    return flags


def run(
    c: Container,
    argv: Sequence[str],
    *,
    input: str | bytes | bytearray | memoryview | None = None,
    capture_output: bool = False,
    stdin: StdioSpec = None,
    stdout: StdioSpec = None,
    stderr: StdioSpec = None,
    timeout: float | None = None,
    check: bool = False,
    pass_fds: Sequence[int] = (),
    executable: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    text: bool | None = None,
    encoding: str | None = None,
    errors: str | None = None,
    universal_newlines: bool | None = None,
) -> Result[str | bytes | None]:
    """Run ``argv`` to completion (see :meth:`Container.run`)."""
    codec = text_codec(text, encoding, errors, universal_newlines)
    data = checked_input(input, codec)  # (before anything runs)
    if data is not None:
        if stdin is not None:
            raise SpecError("stdin and input cannot both be given")
        stdin = PIPE
    if capture_output:
        if stdout is not None or stderr is not None:
            raise SpecError("capture_output cannot be combined with stdout or stderr")
        stdout = stderr = PIPE
    if timeout is not None and not timeout >= 0:  # NaN too
        raise SpecError(f"timeout must be a non-negative number of seconds, got {timeout!r}")
    proc = spawn(
        c,
        argv,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        pass_fds=pass_fds,
        executable=executable,
        env=env,
        cwd=cwd,
        encoding=codec[0] if codec is not None else None,
        errors=codec[1] if codec is not None else None,
        _kill_if_dropped=True,  # (dropped: an exception before the with)
    )
    with proc:
        try:
            raw = proc._communicate(data, timeout)
        except TimeoutExpired as e:
            proc.kill()
            try:
                out, err = proc._communicate(None, 2.0)
            except TimeoutExpired as e2:
                out, err = e2.output, e2.stderr
            # (decoded as subprocess.run does, unless cut inside a character)
            text_out = proc._decoded_if_possible(out, err)
            raise TimeoutExpired(list(proc.args), e.timeout, *text_out) from None
        except BaseException:
            proc.kill()
            raise
        result = proc._result(*proc._decode(*raw))
    if check:
        result.check_returncode()
    return result
