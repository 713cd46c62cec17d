"""Development sessions: tests, lint, typecheck, docs, the cgroup v2 VMs, benchmarks.

``nox -s tests`` runs the suite on this host (as root it includes the rootless
tests, which drop to uid 65534); ``nox -s vm`` runs the ``cgroup2`` tests in a
throw-away VM with a pure cgroup v2 kernel; ``nox -s vm_systemd`` runs the
``systemd`` tests in one that boots systemd as PID 1.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
nox.options.sessions = ["lint", "typecheck", "tests", "docs", "vm", "vm_systemd"]
nox.options.reuse_existing_virtualenvs = True

# The rootless tests run this venv's interpreter as uid 65534: the venv and the
# interpreter it was made from must be reachable by that uid. Debian's python3
# is; a pyenv build under a 0700 /root is not.
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else "python3"


def _world_reachable(path: Path) -> bool:
    for p in [path, *path.parents]:
        try:
            if not os.stat(p).st_mode & stat.S_IXOTH:
                return False
        except OSError:
            return False
    return True


def _hidden_in_sandboxes(path: Path) -> bool:
    # RootFS.host() gives sandboxes a private /tmp and a minimal /dev: a venv
    # there would not be visible to the tests' sandboxed interpreters
    return any(path.is_relative_to(p) for p in (Path("/tmp"), Path("/dev")))


def shared_envdir(root: Path, uid: int) -> str:
    """The virtualenv directory under /var/tmp of the checkout ``root``, for ``uid``.

    Keyed by the checkout's path (a short hash): two checkouts on one machine
    never share, and so never reuse, each other's virtualenvs (the test session
    installs the checkout into its venv).
    """
    key = hashlib.sha256(os.fsencode(root)).hexdigest()[:12]
    name = re.sub(r"[^A-Za-z0-9._-]", "_", root.name)[:32]
    return f"/var/tmp/nscg-nox-{uid}-{name}-{key}"


if not _world_reachable(ROOT) or _hidden_in_sandboxes(ROOT):
    nox.options.envdir = shared_envdir(ROOT, os.getuid())


def _install(session: nox.Session, *extra: str) -> None:
    session.install("--upgrade", "pip")
    session.install(".[test]", *extra)


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Run the test suite on this host (everything but the cgroup v2 VM tests)."""
    _install(session)
    # run from a directory where ./src is not importable: test the installed package
    session.run(
        "python",
        "-m",
        "pytest",
        "-m",
        "not cgroup2 and not systemd",
        "-p",
        "no:cacheprovider",
        *(session.posargs or [str(ROOT / "tests")]),
    )


VM_SCRIPT = ROOT / "tools" / "vm" / "run-in-v2vm.sh"


def _vm_problem() -> str | None:
    import shutil

    if not shutil.which("qemu-system-x86_64"):
        return "qemu-system-x86_64 is missing (apt-get install qemu-system-x86)"
    if not any(p.name.startswith("vmlinuz-") for p in Path("/boot").glob("vmlinuz-*")):
        return "no kernel in /boot (apt-get install linux-image-amd64)"
    if not os.path.exists("/bin/busybox"):
        return "busybox is missing (apt-get install busybox-static)"
    return None


@nox.session(python=PYTHON)
def vm(session: nox.Session) -> None:
    """Run the ``cgroup2`` tests in a throw-away VM with a pure cgroup v2 kernel.

    Skipped (with the reason) when qemu or a kernel is missing, unless
    NSCG_REQUIRE names cgroup2: then it fails.
    """
    problem = _vm_problem()
    if problem:
        if "cgroup2" in os.environ.get("NSCG_REQUIRE", ""):
            session.error(f"NSCG_REQUIRE=cgroup2 but {problem}")
        session.skip(problem)
    _pytest_in_vm(session, "cgroup2")


@nox.session(python=PYTHON)
def vm_systemd(session: nox.Session) -> None:
    """Run the ``systemd`` tests in a throw-away VM that boots systemd as PID 1.

    The guest has the system bus and a lingering unprivileged user whose user
    manager runs (tools/vm/run-in-v2vm.sh ``--systemd``). Skipped (with the
    reason) when qemu, a kernel or systemd is missing, unless NSCG_REQUIRE names
    systemd: then it fails.
    """
    problem = _vm_problem()
    if problem is None and not os.path.exists("/lib/systemd/systemd"):
        problem = "systemd is not installed (apt-get install systemd dbus)"
    if problem:
        if "systemd" in os.environ.get("NSCG_REQUIRE", ""):
            session.error(f"NSCG_REQUIRE=systemd but {problem}")
        session.skip(problem)
    _pytest_in_vm(session, "systemd", "--systemd")


def _pytest_in_vm(session: nox.Session, marker: str, *vm_args: str) -> None:
    """pytest -m ``marker`` on tests/``marker`` in the throw-away VM (``vm_args``: its options)."""
    _install(session)
    python = os.path.join(session.virtualenv.bin, "python")
    session.run(
        "bash",
        str(VM_SCRIPT),
        *vm_args,
        "--timeout",
        "900",
        "--retry",
        "1",
        "--share",
        str(ROOT),
        "--",
        python,
        "-m",
        "pytest",
        "-p",
        "no:hypothesispytest",
        "-p",
        "no:cacheprovider",
        "-m",
        marker,
        *(session.posargs or [str(ROOT / "tests" / marker)]),
        external=True,
        env={"NSCG_REQUIRE": marker},
    )


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff: lint and format check."""
    session.install("ruff")
    session.run("ruff", "check", "src", "tests", "examples", "benchmarks", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests", "examples", "benchmarks", "noxfile.py")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package, tests, examples and benchmarks."""
    _install(session, "mypy", "nox")
    session.run("mypy", "--strict")


#: the peers of the benchmark: command -> Debian package
_PEERS = {"bwrap": "bubblewrap", "crun": "crun", "runc": "runc", "busybox": "busybox-static"}


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """Build the docs (warnings are errors) and run their code samples (doctest)."""
    _install(session, "-r", str(ROOT / "docs" / "requirements.txt"))
    src, out = str(ROOT / "docs"), ROOT / "docs" / "_build"
    for builder in ("html", "doctest"):
        session.run(
            "sphinx-build", "-W", "--keep-going", "-q", "-b", builder, src, str(out / builder)
        )
    session.log(f"docs: file://{out / 'html' / 'index.html'}")


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks side by side with the peers; regenerates docs/performance.md.

    Installs the missing peers with apt when run as root (else they are reported
    as skipped). ``nox -s bench -- -n 50 --no-vm`` passes options to
    benchmarks/run_all.py; the default also runs the crun/runc/cgroup cases in
    the cgroup v2 VM.
    """
    import shutil

    _install(session, "matplotlib")
    missing = [pkg for cmd, pkg in _PEERS.items() if shutil.which(cmd) is None]
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        session.run(
            "apt-get", "install", "-y", "-q", *missing, external=True, success_codes=[0, 100]
        )
    elif missing:
        session.warn(f"not installed (reported as skipped): {' '.join(missing)}")
    args = list(session.posargs)
    if "--no-vm" in args:
        args.remove("--no-vm")
    elif "--vm" not in args:
        args.append("--vm")
    session.run(
        "python",
        str(ROOT / "benchmarks" / "run_all.py"),
        "--doc",
        str(ROOT / "docs" / "performance.md"),
        "--json",
        str(ROOT / "docs" / "performance.json"),
        *args,
    )
