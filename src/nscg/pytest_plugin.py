"""pytest plugin: a ``sandbox`` fixture and tests that run inside a sandbox.

Registered through the ``pytest11`` entry point; it only registers markers and
a fixture, so it costs nothing in a suite that does not use them.

* ``sandbox`` fixture: a :class:`nscg.Container` preset: the host's root
  read-only (``RootFS.host()``: no home directories, an empty /run, no host
  socket), ``tmp_path`` bound writable (and the working directory), this
  interpreter's directories read-only where that root hides them, no network,
  private pid/ipc/uts, modest limits when this host's cgroups allow them.
  After the test it checks that nothing leaked: no child process of the test
  process, no pidfd of another process, no new or removed mount in its mount
  namespace, no cgroup it made (``nscg-<pid>-...``) is left.
* ``@pytest.mark.nscg(...)``: per-test options, each ``name=value`` calling
  ``Container.with_<name>(value)`` (a tuple is passed as positional arguments,
  a dict as keyword arguments); positional arguments are callables
  ``Container -> Container``. ``timeout=`` (seconds) is the isolated run's limit.
  ``image=`` (a path or :class:`nscg.images.Image`) makes the sandbox the
  image's (:meth:`Container.from_image`), ``tmp_path`` still bound writable.
* ``@pytest.mark.nscg_isolated``: the test runs in a fresh interpreter inside
  that sandbox (``python -m pytest -p no:cacheprovider NODEID``) and its outcome
  is reported as the test's. The outer process does not fork: fixtures of the
  outer run are set up as usual, the test function body runs only inside. The
  inner interpreter gets the outer one's flags and import path (``PYTHONPATH``
  made absolute, nscg's own directory added) and loads this plugin the way the
  outer run did (entry point or ``-p nscg.pytest_plugin``).
* ``--nscg-cgroups-unavailable=skip`` (ini ``nscg_cgroups_unavailable``): a test
  that fails because cgroup limits cannot be applied on this host (an
  :class:`nscg.UnsupportedError` about cgroups) is skipped with that error as
  the reason instead of failing. Default ``fail``.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NamedTuple

import pytest

if TYPE_CHECKING:
    from nscg.container import Container

#: set in the inner run of an isolated test: run it, do not recurse
INNER_ENV: Final = "NSCG_PYTEST_INNER"
#: the fd the inner run writes its outcome to (JSON)
REPORT_FD_ENV: Final = "NSCG_PYTEST_REPORT_FD"
DEFAULT_TIMEOUT: Final = 300.0
#: the option and ini name that turns "cgroups unavailable" into a skip
CGROUPS_OPTION: Final = "nscg_cgroups_unavailable"
#: set in a zygote: "CMD_FD,RESP_FD", the pipes it serves tests on
ZYGOTE_ENV: Final = "NSCG_PYTEST_ZYGOTE"
MODE_OPTION: Final = "nscg_isolated_mode"
SCOPE_OPTION: Final = "nscg_zygote_scope"
ALL_OPTION: Final = "nscg_isolate_all"
MODES: Final = ("fresh", "zygote")
SESSION_OPTION: Final = "nscg_session"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--nscg-cgroups-unavailable",
        dest=CGROUPS_OPTION,
        choices=("fail", "skip"),
        default=None,
        help="a test whose cgroup limits cannot be applied on this host: fail (default) "
        "or skip with the reason",
    )
    parser.addoption(
        "--nscg-isolated-mode",
        dest=MODE_OPTION,
        choices=MODES,
        default=None,
        help="how nscg_isolated tests run: fresh (a new interpreter in a new sandbox per "
        "test, default) or zygote (a sandboxed pytest per module or session forks a child "
        "per test)",
    )
    parser.addini(MODE_OPTION, "fresh or zygote: see --nscg-isolated-mode", default="fresh")
    parser.addoption(
        "--nscg-zygote-scope",
        dest=SCOPE_OPTION,
        choices=("module", "session"),
        default=None,
        help="what one zygote serves: the tests of one module (default) or of the session",
    )
    parser.addini(SCOPE_OPTION, "module or session: see --nscg-zygote-scope", default="module")
    parser.addoption(
        "--nscg",
        dest=SESSION_OPTION,
        action="store_true",
        default=False,
        help="run the whole session inside one sandbox (the sandbox fixture's preset, the "
        "rootdir and the current directory read-only, no network)",
    )
    parser.addoption(
        "--nscg-isolate-all",
        dest=ALL_OPTION,
        action="store_true",
        default=False,
        help="run every test as if marked nscg_isolated",
    )
    parser.addini(
        CGROUPS_OPTION,
        "fail or skip: what a test whose cgroup limits cannot be applied does",
        default="fail",
    )


def _cgroups_unavailable_skips(config: pytest.Config) -> bool:
    value = config.getoption(CGROUPS_OPTION) or config.getini(CGROUPS_OPTION)
    if value not in ("fail", "skip"):
        raise pytest.UsageError(f"{CGROUPS_OPTION} must be fail or skip, not {value!r}")
    return bool(value == "skip")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "nscg(*fns, timeout=None, **with_options): sandbox options for the sandbox "
        "fixture and for nscg_isolated (name=value calls Container.with_<name>)",
    )
    config.addinivalue_line(
        "markers",
        "nscg_isolated(mode=None): run this test inside a sandbox (host root read-only, "
        "tmp_path writable, no network): mode fresh, a new interpreter per test; zygote, a "
        "forked child of a sandboxed pytest that collected the module once",
    )
    if os.environ.get(INNER_ENV) and os.environ.get(REPORT_FD_ENV):
        config.pluginmanager.register(_InnerReporter(int(os.environ[REPORT_FD_ENV])))
    if os.environ.get(INNER_ENV) and os.environ.get(ZYGOTE_ENV):
        config.pluginmanager.register(_ZygoteServer(os.environ[ZYGOTE_ENV]))


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> int | None:
    """``pytest --nscg``: run this session again, inside one sandbox, and exit with its status."""
    if not config.getoption(SESSION_OPTION) or os.environ.get(INNER_ENV):
        return None
    import shutil
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="nscg-session-"))
    try:
        here = Path(config.invocation_params.dir)
        dirs = {Path(config.rootpath), here}
        extra = tuple(
            p
            for p in sorted(d for d in dirs if d.is_dir())
            if not any(q != p and p.is_relative_to(q) for q in dirs)
        )
        c = preset(work, extra_ro=extra).with_cwd(str(here))
        args = [a for a in config.invocation_params.args if a != "--nscg"]
        argv, env = _inner_command(config, work, {}, [])
        argv = argv[: argv.index("-m") + 2]  # the interpreter, its flags, -m pytest
        argv += ["-p", "no:cacheprovider", *_plugin_args(config)]
        if not any(a == "--basetemp" or a.startswith("--basetemp=") for a in args):
            argv += ["--basetemp", str(work / "basetemp")]
        r = c.with_env(env).run([*argv, *args])
        return int(r.returncode) if r.returncode >= 0 else 128 - r.returncode
    finally:
        shutil.rmtree(work, ignore_errors=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``--nscg-isolate-all``: every test is an ``nscg_isolated`` one."""
    if config.getoption(ALL_OPTION) and not os.environ.get(INNER_ENV):
        for item in items:
            if item.get_closest_marker("nscg_isolated") is None:
                item.add_marker(pytest.mark.nscg_isolated)


def _limits_allowed() -> bool:
    """Whether memory and pids limits can be applied here (a cgroup v2 host with them)."""
    try:
        from nscg.cgroups import discover

        rep = discover()
    except Exception:
        return False
    return (
        rep.unavailable_reason("memory") is None
        and rep.unavailable_reason("pids") is None
        and {"memory", "pids"} <= set(rep.subtree_control)
    )


def _interpreter_dirs() -> list[str]:
    """Where this interpreter and what it imports live: its prefixes and ``sys.path``."""
    cands = [
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        os.path.dirname(os.path.realpath(sys.executable)),
        *sys.path,
    ]
    return [os.path.abspath(p) for p in cands if p and os.path.isdir(p)]


def preset(tmp_path: Path, *, extra_ro: tuple[Path, ...] = ()) -> Container:
    """The ``sandbox`` fixture's Container for a test whose ``tmp_path`` is ``tmp_path``.

    The host's root read-only without home directories, /run and host sockets
    (``RootFS.host()``), ``tmp_path`` writable; ``extra_ro`` and the
    directories of this interpreter and its ``sys.path`` (a virtualenv or
    pyenv under ``$HOME``, an editable checkout) read-only where that root
    would hide them, so ``sys.executable`` runs inside as it does outside.
    A directory holding a hidden home as a whole (``$HOME`` itself on
    ``sys.path``) is not bound: it would show the secrets again.
    """
    import nscg
    from nscg.rootfs import Tmpfs

    root = nscg.RootFS.host()
    hidden = [op.dest for op in root.ops if isinstance(op, Tmpfs)]
    tmp = str(tmp_path)

    def under(p: str, top: str) -> bool:
        return p == top or p.startswith(top.rstrip("/") + "/")

    want = {str(p) for p in extra_ro}
    for d in _interpreter_dirs():
        if root.host_paths(d) is None and not any(under(h, d) for h in hidden):
            want.add(d)
    want = {d for d in want if not under(d, tmp)}  # tmp_path is bound last, writable
    for d in sorted(want):
        if not any(q != d and under(d, q) for q in want):  # parents only
            root = root.ro_bind(d, d)
    root = root.bind(tmp_path, tmp, readonly=False)
    c = nscg.Container().with_rootfs(root).with_network(nscg.Network.none()).with_cwd(tmp)
    if _limits_allowed():
        c = c.with_limits(memory="512M", pids=256)
    return c


def _apply_marker(c: Container, item: pytest.Item) -> tuple[Container, float]:
    timeout = DEFAULT_TIMEOUT
    for mark in reversed(list(item.iter_markers("nscg"))):  # closest marker last
        for fn in mark.args:
            if not callable(fn):
                raise pytest.UsageError(
                    f"@pytest.mark.nscg positional args must be callables: {fn!r}"
                )
            c = fn(c)
        if "image" in mark.kwargs:  # first: the other options apply to the image's Container
            c = _with_image(c, mark.kwargs["image"])
        for name, value in mark.kwargs.items():
            if name == "image":
                continue
            if name == "timeout":
                timeout = float(value)
                continue
            method: Callable[..., Container] | None = getattr(c, f"with_{name}", None)
            if method is None:
                raise pytest.UsageError(f"@pytest.mark.nscg: Container has no with_{name}()")
            if isinstance(value, tuple):
                c = method(*value)
            elif isinstance(value, dict):
                c = method(**value)
            else:
                c = method(value)
    return c, timeout


def _with_image(c: Container, image: Any) -> Container:
    """``image=``: the image's root and config (:meth:`Container.from_image`), with the
    writable binds of ``c`` (the test's ``tmp_path``) kept on top."""
    from nscg.images._run import container_for
    from nscg.rootfs import Bind

    binds = (
        [op for op in c.rootfs.ops if isinstance(op, Bind) and not op.readonly] if c.rootfs else []
    )
    out = container_for(image, base=c)
    assert out.rootfs is not None
    return out.with_rootfs(out.rootfs.then(*binds))


# ------------------------------------------------------------------ leak check
class _Snapshot(NamedTuple):
    kids: set[int]
    pidfds: set[int]
    mounts: list[str]
    cgroups: set[str]


def _own_cgroups() -> set[str]:
    """The cgroups this process made (``nscg-<pid>-...``) that still exist."""
    try:
        from nscg.cgroups import discover
        from nscg.cgroups._handle import _default_parent

        parent = _default_parent(discover())
        if parent is None:
            return set()
        prefix = f"nscg-{os.getpid()}-"
        with os.scandir(parent) as it:
            return {os.path.join(parent, e.name) for e in it if e.name.startswith(prefix)}
    except Exception:
        return set()


def _snapshot(*, cgroups: bool = True) -> _Snapshot:
    kids: set[int] = set()
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/children") as f:
                kids.update(int(x) for x in f.read().split())
        except OSError:
            pass
    pidfds: set[int] = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[pidfd]":
                with open(f"/proc/self/fdinfo/{fd}") as f:
                    info = dict(ln.split(":", 1) for ln in f.read().splitlines() if ":" in ln)
                # nscg keeps a pidfd of the calling process itself (death with parent)
                if info.get("Pid", "").strip() != str(os.getpid()):
                    pidfds.add(int(fd))
        except OSError:
            pass
    with open("/proc/self/mountinfo") as f:
        # mount id, parent id, major:minor, root, mount point
        mounts = sorted(" ".join(ln.split()[:5]) for ln in f)
    return _Snapshot(kids, pidfds, mounts, _own_cgroups() if cgroups else set())


def _leaks(before: _Snapshot, after: _Snapshot) -> list[str]:
    """What ``after`` holds that ``before`` did not, in words (empty: nothing leaked)."""
    leaked = []
    if after.kids - before.kids:
        leaked.append(f"child processes {sorted(after.kids - before.kids)}")
    if after.pidfds - before.pidfds:
        leaked.append(f"pidfds {sorted(after.pidfds - before.pidfds)}")
    if after.mounts != before.mounts:
        new = sorted(set(after.mounts) - set(before.mounts))
        gone = sorted(set(before.mounts) - set(after.mounts))
        leaked.append(
            f"mounts ({len(before.mounts)} before, {len(after.mounts)} after; "
            f"new {[m.split()[4] for m in new]}, gone {[m.split()[4] for m in gone]})"
        )
    if after.cgroups - before.cgroups:
        leaked.append(f"cgroups {sorted(after.cgroups - before.cgroups)}")
    return leaked


@pytest.fixture
def sandbox(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Container]:
    """A :class:`nscg.Container` preset for tests (see the module docstring)."""
    c, _ = _apply_marker(preset(tmp_path), request.node)
    before = _snapshot()
    yield c
    gc.collect()
    try:
        from nscg.process import reap_abandoned

        reap_abandoned()
    except ImportError:
        pass
    leaked = _leaks(before, _snapshot())
    if leaked:
        pytest.fail("the sandbox fixture's test leaked: " + ", ".join(leaked), pytrace=False)


# ------------------------------------------------------------------ isolated mode
class _InnerReporter:
    """In the inner run: write each phase's outcome to the report fd."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.reports: list[dict[str, Any]] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.reports.append(_report_dict(report))

    def pytest_sessionfinish(self) -> None:
        data = json.dumps(self.reports).encode()
        os.lseek(self.fd, 0, os.SEEK_SET)
        os.write(self.fd, data)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """With ``--nscg-cgroups-unavailable=skip``: an UnsupportedError about cgroups skips."""
    try:
        return (yield)
    except Exception as exc:
        if _is_cgroups_unavailable(exc) and _cgroups_unavailable_skips(item.config):
            pytest.skip(f"cgroup limits unavailable here: {exc}")
        raise


def _is_cgroups_unavailable(exc: BaseException) -> bool:
    from nscg.errors import UnsupportedError

    return isinstance(exc, UnsupportedError) and (exc.feature or "").startswith("cgroup")


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if pyfuncitem.get_closest_marker("nscg_isolated") is None or os.environ.get(INNER_ENV):
        return None
    _run_isolated(pyfuncitem)
    return True


def _interpreter_flags() -> list[str]:
    """This interpreter's command-line flags (``-S``, ``-E``, ``-X ...``), for the inner one."""
    import subprocess

    flags: list[str] = subprocess._args_from_interpreter_flags()  # type: ignore[attr-defined]  # private but stable since 3.2; multiprocessing uses it
    return flags


def _inner_pythonpath(config: pytest.Config) -> str:
    """``PYTHONPATH`` for the inner interpreter: the caller's, absolute, and nscg's directory.

    A relative entry is made absolute against the directory pytest was started
    in (the inner run starts in the rootdir); the directory nscg was imported
    from is added, so the plugin and the library load inside even when they are
    importable only through the caller's ``PYTHONPATH`` or ``sys.path``.
    """
    import nscg

    base = Path(config.invocation_params.dir)
    out: list[str] = []
    for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep):
        if entry:
            out.append(str(base / entry))
    here = str(Path(nscg.__file__).resolve().parent.parent)
    if here not in out:
        out.append(here)
    return os.pathsep.join(out)


def _plugin_args(config: pytest.Config) -> list[str]:
    """Load the plugin inside as outside: ``-p nscg.pytest_plugin`` unless the entry point did."""
    args = ["-o", f"{CGROUPS_OPTION}={'skip' if _cgroups_unavailable_skips(config) else 'fail'}"]
    if config.pluginmanager.get_plugin("nscg") is None:  # not through the pytest11 entry point
        args += ["-p", "nscg.pytest_plugin"]
    return args


def _isolated_container(item: pytest.Item, work: Path) -> tuple[Container, float]:
    """The sandbox of an isolated test: :func:`preset` on ``work``, the marker, cwd rootdir."""
    config = item.config
    rootdir = Path(config.rootpath)
    dirs = {rootdir, Path(config.invocation_params.dir), Path(item.path).parent}
    # parents only: a bind of a directory would hide an earlier bind inside it
    extra = tuple(
        p
        for p in sorted(d for d in dirs if d.is_dir())
        if not any(q != p and p.is_relative_to(q) for q in dirs)
    )
    c, timeout = _apply_marker(preset(work, extra_ro=extra), item)
    return c.with_cwd(str(rootdir)), timeout


def _inner_command(
    config: pytest.Config, work: Path, extra_env: dict[str, str], targets: list[str]
) -> tuple[list[str], dict[str, str]]:
    """The inner pytest's argv and environment (the caller's, with the import path carried)."""
    env = dict(os.environ)
    env.pop("PYTEST_CURRENT_TEST", None)
    env.pop("PYTEST_ADDOPTS", None)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PYTHONPATH"] = _inner_pythonpath(config)
    env[INNER_ENV] = "1"
    env.update(extra_env)
    argv = [sys.executable, *_interpreter_flags(), "-m", "pytest"]
    argv += ["-p", "no:cacheprovider", "-q", *_plugin_args(config)]
    argv += ["--rootdir", str(config.rootpath), "--basetemp", str(work / "basetemp")]
    if config.inipath is not None:
        argv += ["-c", str(config.inipath)]
    argv += ["-o", "addopts=--strict-markers", f"--import-mode={config.option.importmode}"]
    argv += targets
    return argv, env


def _isolated_mode(item: pytest.Item) -> str:
    mark = item.get_closest_marker("nscg_isolated")
    mode = (mark.kwargs.get("mode") if mark is not None else None) or (
        item.config.getoption(MODE_OPTION) or item.config.getini(MODE_OPTION)
    )
    if mode not in MODES:
        raise pytest.UsageError(f"nscg_isolated mode must be one of {MODES}, not {mode!r}")
    return str(mode)


def _run_isolated(item: pytest.Function) -> None:
    if _isolated_mode(item) == "zygote":
        _report_inner(item, _zygote_for(item).run(item.nodeid))
        return
    import tempfile

    import nscg

    config = item.config
    work = Path(tempfile.mkdtemp(prefix="nscg-isolated-"))
    try:
        c, timeout = _isolated_container(item, work)
        with tempfile.TemporaryFile(dir=work) as report:
            fd = report.fileno()
            argv, env = _inner_command(config, work, {REPORT_FD_ENV: str(fd)}, [item.nodeid])
            try:
                r = c.with_env(env).run(argv, capture_output=True, timeout=timeout, pass_fds=[fd])
            except nscg.TimeoutExpired:
                pytest.fail(f"isolated test timed out after {timeout:g} s", pytrace=False)
            report.seek(0)
            raw = report.read()
        output = ((r.stdout or b"") + (r.stderr or b"")).decode(errors="replace")
        reports = json.loads(raw) if raw else []
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    if not reports:
        pytest.fail(
            f"isolated run of {item.nodeid} reported nothing (status {r.returncode}):\n{output}",
            pytrace=False,
        )
    _report_inner(item, reports)


def _report_inner(item: pytest.Item, reports: list[dict[str, Any]]) -> None:
    """Make the inner run's outcome the test's: a failure fails, then a skip or xfail skips."""
    for rep in reports:
        if rep["outcome"] == "failed":
            pytest.fail(f"[inside the sandbox, {rep['when']}]\n{rep['longrepr']}", pytrace=False)
    for rep in reports:
        if rep["outcome"] == "skipped":
            if rep["wasxfail"] is not None:
                pytest.xfail(rep["wasxfail"])
            pytest.skip(f"[inside the sandbox] {rep['reason']}")


def _report_dict(report: pytest.TestReport) -> dict[str, Any]:
    reason = ""
    if report.skipped and isinstance(report.longrepr, tuple):
        reason = str(report.longrepr[2])
    return {
        "when": report.when,
        "outcome": report.outcome,
        "longrepr": report.longreprtext if report.failed else "",
        "reason": reason,
        "wasxfail": getattr(report, "wasxfail", None),
    }


# ------------------------------------------------------------------ zygote mode
class _Zygote:
    """A sandboxed pytest that collected some test files once and forks a child per test.

    The outer process sends a node id per line on one pipe; the zygote (inside
    the sandbox) forks, the child runs that test's whole protocol (setup, call,
    teardown: every fixture afresh) and exits, and the zygote answers one JSON
    line on the other pipe. The outer pytest process is never forked.
    """

    def __init__(self, item: pytest.Item, targets: list[str]) -> None:
        import tempfile

        self.work = Path(tempfile.mkdtemp(prefix="nscg-zygote-"))
        self.proc: Any = None
        try:
            c, self.timeout = _isolated_container(item, self.work)
            cmd_r, self.cmd_w = os.pipe()
            self.resp_r, resp_w = os.pipe()
            fds = {ZYGOTE_ENV: f"{cmd_r},{resp_w}"}
            argv, env = _inner_command(item.config, self.work, fds, targets)
            self.log = open(self.work / "zygote.log", "wb")  # noqa: SIM115 (closed in close())
            try:
                self.proc = c.with_env(env).spawn(
                    argv, pass_fds=[cmd_r, resp_w], stdout=self.log, stderr=self.log
                )
            finally:
                os.close(cmd_r)
                os.close(resp_w)
        except BaseException:
            self.close()
            raise
        self.buf = b""

    def run(self, nodeid: str) -> list[dict[str, Any]]:
        """Run one test in a fresh child of the zygote; its reports."""
        import select

        try:
            os.write(self.cmd_w, nodeid.encode() + b"\n")
        except OSError as exc:
            self._broken(f"the zygote is gone ({exc})")
        deadline = _now() + self.timeout
        while b"\n" not in self.buf:
            left = deadline - _now()
            if left <= 0:
                self._broken(f"isolated test timed out after {self.timeout:g} s")
            ready, _, _ = select.select([self.resp_r], [], [], left)
            if ready:
                chunk = os.read(self.resp_r, 65536)
                if not chunk:
                    self._broken("the zygote exited")
                self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        answer = json.loads(line)
        if answer.get("error"):
            pytest.fail(f"[zygote] {answer['error']}", pytrace=False)
        reports: list[dict[str, Any]] = answer["reports"]
        if not reports:
            pytest.fail(
                f"the test's child in the zygote reported nothing (wait status {answer['status']})",
                pytrace=False,
            )
        return reports

    def _broken(self, why: str) -> None:
        log = ""
        if self.proc is not None:
            self.proc.kill()
        with contextlib.suppress(OSError):
            log = (self.work / "zygote.log").read_text(errors="replace")[-4000:]
        self.close()
        _ZYGOTES.pop_value(self)
        pytest.fail(f"{why}\n{log}", pytrace=False)

    def close(self) -> None:
        """End the zygote (EOF on its command pipe, then a kill) and remove its directory."""
        import shutil

        for name in ("cmd_w", "resp_r"):
            fd = getattr(self, name, -1)
            if fd >= 0:
                os.close(fd)
                setattr(self, name, -1)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=10)
            except Exception:
                self.proc.kill()
                self.proc.wait()
            self.proc.close()
            self.proc = None
        if getattr(self, "log", None) is not None:
            self.log.close()
        shutil.rmtree(self.work, ignore_errors=True)


def _now() -> float:
    import time

    return time.monotonic()


class _ZygoteCache(dict[tuple[str, str], _Zygote]):
    """The live zygotes, by (scope key, marker key)."""

    def pop_value(self, z: _Zygote) -> None:
        for k, v in list(self.items()):
            if v is z:
                del self[k]

    def close(self, scope: str | None = None) -> None:
        for k in [k for k in self if scope is None or k[0] == scope]:
            self.pop(k).close()


_ZYGOTES: Final = _ZygoteCache()


def _zygote_key(item: pytest.Item) -> tuple[str, str]:
    marks = [(m.args, sorted(m.kwargs.items())) for m in item.iter_markers("nscg")]
    return _scope_key(item), repr(marks)


def _scope_key(item: pytest.Item) -> str:
    scope = item.config.getoption(SCOPE_OPTION) or item.config.getini(SCOPE_OPTION)
    if scope not in ("module", "session"):
        raise pytest.UsageError(f"{SCOPE_OPTION} must be module or session, not {scope!r}")
    return str(item.path) if scope == "module" else ""


def _zygote_for(item: pytest.Item) -> _Zygote:
    key = _zygote_key(item)
    z = _ZYGOTES.get(key)
    if z is None:
        if key[0]:
            targets = [str(item.path)]
        else:  # the session's: every file with a test for a zygote, collected once
            files = {
                str(it.path)
                for it in item.session.items
                if it.get_closest_marker("nscg_isolated") and _isolated_mode(it) == "zygote"
            }
            targets = sorted(files)
        z = _ZYGOTES[key] = _Zygote(item, targets)
    return z


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """A module's zygotes end after its last test (scope ``module``)."""
    if os.environ.get(INNER_ENV) or not _ZYGOTES:
        return
    if nextitem is None or nextitem.path != item.path:
        _ZYGOTES.close(str(item.path))


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Every zygote left ends with the session."""
    _ZYGOTES.close()


class _ZygoteServer:
    """Inside the sandbox: serve the outer run's tests, one forked child each."""

    def __init__(self, spec: str) -> None:
        cmd, resp = spec.split(",")
        self.cmd, self.resp = int(cmd), int(resp)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> bool:
        items = {it.nodeid: it for it in session.items}
        factory = getattr(session.config, "_tmp_path_factory", None)
        if factory is not None:
            factory.getbasetemp()  # made once here, not by (and for) each child
        with os.fdopen(self.cmd, "rb") as commands:
            for line in commands:
                nodeid = line.decode().rstrip("\n")
                item = items.get(nodeid)
                if item is None:
                    answer: dict[str, Any] = {"error": f"{nodeid} was not collected inside"}
                else:
                    answer = self._fork(item)
                os.write(self.resp, json.dumps(answer).encode() + b"\n")
        return True

    def _fork(self, item: pytest.Item) -> dict[str, Any]:
        from _pytest.runner import runtestprotocol

        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the test's child: run it, write its reports, leave
            code = 0
            try:
                os.close(r)
                reports = runtestprotocol(item, log=False, nextitem=None)
                data = json.dumps([_report_dict(rep) for rep in reports]).encode()
                while data:
                    data = data[os.write(w, data) :]
            except BaseException:
                code = 70
            finally:
                os._exit(code)
        os.close(w)
        chunks = []
        while chunk := os.read(r, 65536):
            chunks.append(chunk)
        os.close(r)
        _, status = os.waitpid(pid, 0)
        raw = b"".join(chunks)
        return {"reports": json.loads(raw) if raw else [], "status": status}
