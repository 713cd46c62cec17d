"""Spec validation and marshalling: pure logic, no privileges, nothing runs."""

from __future__ import annotations

import errno
import pickle
import re
import resource
import subprocess
from pathlib import Path

import attrs
import pytest

import nscg
from nscg import Container, IdMap, Namespace, TimeOffsets
from nscg.container import Rlimit, rlimit_name

NATIVE = Path(nscg.__file__).parent / "_native"


def test_namespace_parse() -> None:
    assert Namespace.parse("user,pid") == Namespace.USER | Namespace.PID
    assert Namespace.parse(["net", Namespace.UTS]) == Namespace.NET | Namespace.UTS
    assert Namespace.parse("all") == Namespace.ALL
    assert Namespace.parse("mnt") == Namespace.MOUNT
    assert Namespace.ALL & Namespace.TIME == 0
    with pytest.raises(nscg.SpecError, match="unknown namespace"):
        Namespace.parse("bogus")
    with pytest.raises(nscg.SpecError):
        Namespace.parse(1 << 40)
    assert next(k.proc_name for k in Namespace.ALL.kinds()) == "user"


def test_namespace_values_are_the_kernels() -> None:
    import os

    assert getattr(os, "CLONE_NEWNET", 0x40000000) == Namespace.NET
    assert int(Namespace.USER) == 0x10000000 and int(Namespace.TIME) == 0x80


def test_id_maps() -> None:
    assert IdMap(0, 1000).line() == "0 1000 1\n"
    for bad in ((-1, 0, 1), (0, 0, 0), (0, 2**32 - 10, 100), ("0", 0, 1)):
        with pytest.raises(nscg.SpecError):
            IdMap(*bad)
    with pytest.raises(nscg.SpecError, match="overlap"):
        Container().with_uid_map((0, 1000, 10), (5, 5000, 10)).validate()
    with pytest.raises(nscg.SpecError, match="overlap"):
        Container().with_uid_map((0, 1000, 10), (100, 1005, 10)).validate()
    with pytest.raises(nscg.SpecError, match="not mapped"):
        Container().with_uid_map((0, 1000, 1)).with_user(5).validate()


def test_time_offsets() -> None:
    assert (
        TimeOffsets(monotonic=1.5, boottime=-2).text() == "monotonic 1 500000000\nboottime -2 0\n"
    )
    with pytest.raises(nscg.SpecError, match="time namespace"):
        attrs.evolve(Container(), time_offsets=TimeOffsets(1)).validate()
    with pytest.raises(nscg.SpecError):
        TimeOffsets(monotonic="x")  # type: ignore[arg-type]  # wrong on purpose


def test_rlimits() -> None:
    assert Rlimit.of("nofile", 10).hard == 10
    assert Rlimit.of("RLIMIT_NOFILE", None).soft == 2**64 - 1
    with pytest.raises(nscg.SpecError, match="non-negative"):
        Container().with_rlimit("nofile", -2)
    with pytest.raises(nscg.SpecError, match="above the hard"):
        Container().with_rlimit("nofile", 10, 5)
    with pytest.raises(nscg.SpecError, match="unknown rlimit"):
        Container().with_rlimit("bogus", 1)
    c = Container().with_rlimit("nofile", 10).with_rlimit("nofile", 20)
    assert len(c.rlimits) == 1 and c.rlimits[0].soft == 20


def test_cross_field_rules() -> None:
    with pytest.raises(nscg.SpecError, match="uts"):
        Container().without_namespaces("uts").with_hostname("x").validate()
    with pytest.raises(nscg.SpecError, match="user namespace"):
        Container().without_namespaces("user").with_uid_map((0, 0, 1)).validate()
    with pytest.raises(nscg.SpecError, match="absolute"):
        Container().with_cwd("relative").validate()
    with pytest.raises(nscg.SpecError):
        Container().with_hostname("a" * 65)
    with pytest.raises(nscg.SpecError):
        Container().with_env({"A=B": "x"})
    with pytest.raises(nscg.SpecError):
        Container().with_user(-1)


def test_bad_argv_is_spec_error() -> None:
    for argv in ([], "true", ["a\0b"]):
        with pytest.raises(nscg.SpecError):
            Container().spawn(argv)


def test_builder_is_immutable() -> None:
    a = Container()
    b = a.with_hostname("x")
    assert a.hostname is None and b.hostname == "x"
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        a.hostname = "y"  # type: ignore[misc]  # frozen on purpose


def test_errors_are_in_the_nscg_namespace() -> None:
    for name in (
        "NscgError",
        "SpecError",
        "SyscallError",
        "SpawnError",
        "UnsupportedError",
        "ExecutableNotFoundError",
        "ExecutablePermissionError",
        "TimeoutExpired",
        "CalledProcessError",
    ):
        assert getattr(nscg, name).__module__ == "nscg"
    assert issubclass(nscg.SpecError, ValueError)
    assert issubclass(nscg.SpawnError, OSError)
    assert issubclass(nscg.ExecutableNotFoundError, FileNotFoundError)
    assert issubclass(nscg.ExecutablePermissionError, PermissionError)
    e = nscg.SpawnError(22, "pivot_root", nscg.Stage.PIVOT_ROOT, 3, "/proc")
    assert (
        str(e) == "pivot_root failed at stage PIVOT_ROOT (op #3 '/proc'): "
        "[Errno 22 EINVAL] Invalid argument"
    )


def test_stub_matches_cdef() -> None:
    abi = (NATIVE / "abi.h").read_text()
    stub = (NATIVE / "_nscg.pyi").read_text()
    consts = set(re.findall(r"^#define (NSCG_\w+) ", abi, re.M))
    funcs = set(re.findall(r"^\w[\w\s\*]*?\b(nscg_\w+)\(", abi, re.M))
    stub_consts = set(re.findall(r"^    (NSCG_\w+): Final\[int\]", stub, re.M))
    stub_funcs = set(re.findall(r"^    def (nscg_\w+)\(", stub, re.M))
    assert consts == stub_consts
    assert funcs == stub_funcs
    for name in consts:
        assert hasattr(nscg._native.lib, name)


def test_stale_build_is_detected(tmp_path: Path) -> None:
    from nscg import _native

    for src in NATIVE.iterdir():
        if src.suffix in (".c", ".h"):
            (tmp_path / src.name).write_bytes(src.read_bytes())
    assert _native._source_hash(tmp_path) == _native._source_hash(NATIVE)
    (tmp_path / "child.c").write_text("changed")
    assert _native._source_hash(tmp_path) != _native._source_hash(NATIVE)


def test_lazy_exports_are_complete() -> None:
    assert set(nscg.__all__) == set(nscg._EXPORTS)
    for name in nscg.__all__:
        assert getattr(nscg, name) is not None
    with pytest.raises(AttributeError):
        _ = nscg.NoSuchThing


# ------------------------------------------------------------------ issue 15, item 8
@pytest.mark.parametrize(
    "name", ["box", "box-7", "a.b.c", "A1", "x" * 63, "a." * 31 + "bc", "0", "ci-box.example"]
)
def test_hostnames_rfc1123_accepted(name: str) -> None:
    assert Container().with_hostname(name).hostname == name
    assert Container().with_domainname(name).domainname == name


@pytest.mark.parametrize(
    "name",
    ["", "-a", "a-", "a..b", ".a", "a.", "a b", "a/b", "a\nb", "a_b", "h\udcff", "é", "x" * 64],
)
def test_hostnames_not_rfc1123_refused(name: str) -> None:
    with pytest.raises(nscg.SpecError, match="RFC 1123"):
        Container().with_hostname(name)
    with pytest.raises(nscg.SpecError, match="domainname"):
        Container().with_domainname(name)


def test_hostname_longer_than_the_kernels_limit() -> None:
    name = ".".join(["a" * 20] * 4)  # labels fine, 83 characters
    with pytest.raises(nscg.SpecError, match="at most 64 characters"):
        Container().with_hostname(name)


def test_rlimit_errors_name_the_limit() -> None:
    with pytest.raises(nscg.SpecError, match="RLIMIT_NOFILE: soft limit 10 is above"):
        Container().with_rlimit("nofile", 10, 5)
    with pytest.raises(nscg.SpecError, match="RLIMIT_NPROC: soft limit unlimited"):
        Container().with_rlimit(resource.RLIMIT_NPROC, None, 5)
    dup = Container(rlimits=[Rlimit.of("nofile", 5), Rlimit.of("nofile", 6)])
    with pytest.raises(nscg.SpecError, match="RLIMIT_NOFILE given twice"):
        dup.validate()
    assert rlimit_name(resource.RLIMIT_NOFILE) == "RLIMIT_NOFILE"
    assert rlimit_name(resource.RLIMIT_AS) == "RLIMIT_AS"


def test_nofile_above_nr_open_refused() -> None:
    nr_open = int(Path("/proc/sys/fs/nr_open").read_text())
    for hard in (nr_open + 1, None):  # None: unlimited, which setrlimit refuses too
        with pytest.raises(nscg.SpecError, match=rf"fs.nr_open \({nr_open}\)"):
            Container().with_rlimit("nofile", 64, hard).validate()


def test_hard_limit_above_the_callers_refused_in_a_user_namespace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = resource.getrlimit

    def getrlimit(res: int) -> tuple[int, int]:  # the caller's NOFILE hard limit: 100
        return (64, 100) if res == resource.RLIMIT_NOFILE else real(res)

    monkeypatch.setattr(resource, "getrlimit", getrlimit)
    c = Container().with_rlimit("nofile", 64, 101)
    with pytest.raises(nscg.SpecError, match=r"above the caller's own \(100\).*CAP_SYS_RESOURCE"):
        c.validate()
    c.with_rlimit("nofile", 64, 100).validate()  # the caller's own is fine
    # without a user namespace, a caller with CAP_SYS_RESOURCE may raise it
    plain = c.without_rootfs().without_namespaces("user")
    status = Path("/proc/self/status").read_text()
    cap_eff = int(re.search(r"^CapEff:\s*([0-9a-f]+)", status, re.M).group(1), 16)  # type: ignore[union-attr]  # always there
    if cap_eff >> 24 & 1 and Path("/proc/self/uid_map").read_text().split() == [
        "0",
        "0",
        "4294967295",
    ]:
        plain.validate()
    else:
        with pytest.raises(nscg.SpecError, match="CAP_SYS_RESOURCE"):
            plain.validate()


def test_pids_zero_refused() -> None:
    with pytest.raises(nscg.SpecError, match="pids_max=0"):
        Container().with_limits(pids=0).validate()
    Container().with_limits(pids=1).validate()


def test_errors_are_subprocess_errors_and_pickle() -> None:
    """``except subprocess.CalledProcessError`` / ``TimeoutExpired`` catch nscg's own."""
    cpe = nscg.CalledProcessError(3, ["false"], b"out", b"err")
    assert isinstance(cpe, subprocess.CalledProcessError) and isinstance(cpe, nscg.NscgError)
    assert str(cpe) == "Command '['false']' returned non-zero exit status 3."
    assert (cpe.returncode, cpe.cmd, cpe.stdout, cpe.output, cpe.stderr) == (
        3,
        ["false"],
        b"out",
        b"out",
        b"err",
    )
    assert "died with <Signals.SIGKILL: 9>" in str(nscg.CalledProcessError(-9, ["x"]))
    te = nscg.TimeoutExpired(["sleep", "9"], 0.5, "partial", None)
    assert isinstance(te, subprocess.TimeoutExpired) and isinstance(te, TimeoutError)
    assert str(te) == "Command '['sleep', '9']' timed out after 0.5 seconds"
    assert te.output == "partial" and te.stderr is None
    pe = nscg.ExecutablePermissionError(errno.EACCES, "not executable", "/etc")
    spawn_error = nscg.SpawnError(2, "chdir", nscg.Stage.CHDIR, 3, "/x", detail="hint")
    for e in (cpe, te, pe, spawn_error, nscg.SyscallError(1, "open", "/f"), nscg.SpecError("x")):
        back = pickle.loads(pickle.dumps(e))
        assert type(back) is type(e) and str(back) == str(e)
        assert back.__dict__ == e.__dict__
    assert pickle.loads(pickle.dumps(spawn_error)).stage is nscg.Stage.CHDIR
