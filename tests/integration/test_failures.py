"""Every setup stage, made to fail on purpose: a typed error, nothing left behind."""

from __future__ import annotations

import errno
import os
import resource
import sys

import pytest

import nscg
from nscg import Container, Stage
from nscg._spawn import spawn
from tests.conftest import children, open_fds

#: stages reachable with the spec below, and the syscall each names
REACHABLE = {
    Stage.CLONE: "clone3",
    Stage.SIGNALS: "sigaction",
    Stage.PDEATHSIG: "prctl",
    Stage.FDS: "fcntl",
    Stage.SETSID: "setsid",
    Stage.WAIT_PARENT: "read",
    Stage.UNSHARE: "unshare",
    Stage.FORK: "clone3",
    Stage.HOSTNAME: "sethostname",
    Stage.DOMAINNAME: "setdomainname",
    Stage.LOOPBACK: "socket",
    Stage.TIMENS: "unshare",
    Stage.RLIMITS: "setrlimit",
    Stage.CHDIR: "chdir",
    Stage.SETGROUPS: "setgroups",
    Stage.SETGID: "setresgid",
    Stage.SETUID: "setresuid",
    Stage.NO_NEW_PRIVS: "prctl",
    Stage.EXEC: "execve",
    Stage.ID_MAPS: "write",
}


def _spec() -> Container:
    return (
        Container()
        .with_domainname("d")
        .with_time_offsets(monotonic=5)
        .with_cwd("/tmp")
        .with_rlimit("nofile", 100)
    )


@pytest.mark.parametrize("stage", list(REACHABLE), ids=lambda s: s.name)
def test_injected_failure_at_each_stage(stage: Stage) -> None:
    if stage == Stage.SETGROUPS and os.geteuid() != 0:
        pytest.skip("setgroups runs only for a privileged caller")
    fds, kids = open_fds(), set(children())
    with pytest.raises(nscg.SpawnError) as ei:
        spawn(_spec(), ["true"], _fault=(stage, errno.EACCES, -1))
    e = ei.value
    assert e.stage == stage
    assert e.errno == errno.EACCES
    assert e.syscall == REACHABLE[stage]
    assert stage.name in str(e)
    if stage == Stage.RLIMITS:  # named, not numbered
        assert e.filename == "RLIMIT_NOFILE"
    assert open_fds() == fds
    assert set(children()) == kids  # reaped: no process, no zombie


def test_setns_and_unshare_failures_name_the_stage() -> None:
    with Container().spawn(["sleep", "30"]) as box:
        c = Container().joining(box, kinds="user,net")
        try:
            for stage in (Stage.SETNS, Stage.UNSHARE):
                with pytest.raises(nscg.SpawnError) as ei:
                    spawn(c, ["true"], _fault=(stage, errno.EPERM, -1))
                assert ei.value.stage == stage
            with pytest.raises(nscg.SpawnError) as ei:
                spawn(c, ["true"], _fault=(Stage.SETNS, errno.EPERM, 1))
            assert ei.value.op_index == 1 and ei.value.filename == "net namespace"
        finally:
            for r in c.join:
                r.close()
        box.kill()


def test_real_failures() -> None:
    # a missing working directory
    with pytest.raises(nscg.SpawnError) as ei:
        Container().with_cwd("/nonexistent-dir-xyz").run(["true"])
    assert (ei.value.stage, ei.value.errno) == (Stage.CHDIR, errno.ENOENT)
    assert ei.value.filename == "/nonexistent-dir-xyz"
    assert "/nonexistent-dir-xyz" in str(ei.value)
    # a script whose interpreter is missing
    script = f"/tmp/nscg-test-{os.getpid()}.sh"
    with open(script, "w") as f:
        f.write("#!/nonexistent/interpreter\n")
    os.chmod(script, 0o755)
    try:
        with pytest.raises(nscg.SpawnError) as ei:
            Container().run([script])
        assert (ei.value.stage, ei.value.errno) == (Stage.EXEC, errno.ENOENT)
        assert "interpreter" in str(ei.value)
    finally:
        os.unlink(script)
    # an rlimit the kernel would refuse (above fs.nr_open; above the caller's
    # hard limit inside a user namespace) is refused before anything runs;
    # the RLIMITS stage itself is failed on purpose in the tests above
    hard = 1 << 40
    with pytest.raises(nscg.SpecError, match=r"RLIMIT_NOFILE.*nr_open"):
        Container().with_rlimit("nofile", hard).run(["true"])
    own = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    if own != resource.RLIM_INFINITY:
        with pytest.raises(nscg.SpecError, match=r"RLIMIT_NPROC.*CAP_SYS_RESOURCE"):
            Container().with_rlimit("nproc", own, own + 1).run(["true"])


def test_bad_pass_fd_is_spec_error() -> None:
    with pytest.raises(nscg.SpecError):
        Container().run(["true"], pass_fds=[987])
    with pytest.raises(nscg.SpecError):
        Container().run(["true"], pass_fds=[1])


def test_pass_fds_reach_the_payload() -> None:
    r, w = os.pipe()
    try:
        os.set_inheritable(w, False)
        res = Container().run(
            [sys.executable, "-c", f"import os; os.write({w}, b'hi')"], pass_fds=[w]
        )
        assert res.returncode == 0
        assert os.read(r, 10) == b"hi"
    finally:
        os.close(r)
        os.close(w)


def test_init_exec_failure_kills_the_started_payload() -> None:
    fds, kids = open_fds(), set(children())
    with pytest.raises(nscg.SpawnError) as ei:
        spawn(Container(), ["sleep", "100"], _fault=(Stage.FORK, errno.ENOEXEC, 1))
    assert (ei.value.stage, ei.value.op_index, ei.value.syscall) == (Stage.FORK, 1, "execveat")
    assert open_fds() == fds
    assert set(children()) == kids


def test_too_little_fd_scratch_fails_at_fds_instead_of_dropping_fds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The child refuses a scratch too small for the fds it keeps (it used to drop some)."""
    from nscg import _spawn
    from nscg._native import lib

    class Short:
        NSCG_SCRATCH_CHANNELS = 0

        def __getattr__(self, name: str) -> object:
            return getattr(lib, name)

    monkeypatch.setattr(_spawn, "lib", Short())
    before = (children(), open_fds())
    with pytest.raises(nscg.SpawnError) as ei:
        Container().without_rootfs().run(["/bin/true"])
    assert (ei.value.stage, ei.value.errno) == (Stage.FDS, errno.EOVERFLOW)
    assert (children(), open_fds()) == before
