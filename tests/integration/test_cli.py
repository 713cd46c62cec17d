"""The nscg command line: run, check, features."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from nscg.cgroups import CgroupMode, discover


def nscg(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "nscg", *args], capture_output=True, timeout=120, check=False
    )


def test_run_shows_isolation_and_passes_the_status_through() -> None:
    r = nscg("run", "--hostname", "cli", "--", "sh", "-c", "hostname; echo $$; exit 3")
    assert r.returncode == 3
    assert r.stdout.split() == [b"cli", b"2"]
    r = nscg("run", "--", "sh", "-c", "kill -TERM $$; sleep 1")
    assert r.returncode == 128 + 15


@pytest.mark.parametrize(
    "argv",
    [["run", "--bogus", "--", "true"], ["run"], ["nope"], ["run", "--timeout", "x", "--", "true"]],
)
def test_bad_options_exit_2_with_one_line(argv: list[str]) -> None:
    r = nscg(*argv)
    assert r.returncode == 2
    assert len(r.stderr.decode().strip().splitlines()) == 1, r.stderr
    assert b"Traceback" not in r.stderr


def test_missing_program_is_one_line() -> None:
    r = nscg("run", "--", "no-such-program-xyz")
    assert r.returncode != 0
    assert b"Traceback" not in r.stderr and b"no-such-program-xyz" in r.stderr


def test_check_json_reports_this_hosts_cgroups() -> None:
    r = nscg("check", "--json")
    assert r.returncode == 0, r.stderr
    checks = {c["name"]: c for c in json.loads(r.stdout)}
    mode = checks["cgroup v2 mode"]
    rep = discover()
    assert mode["detail"].startswith(rep.mode.value)
    if rep.mode == CgroupMode.HYBRID:
        assert mode["ok"] is False
        for ctl in rep.v1_controllers:
            assert ctl in mode["detail"]
    assert (
        checks[
            "namespace net"
            if "namespace net" in checks
            else "namespace net (with a user namespace)"
        ]["ok"]
        is True
    )
    assert checks["seccomp filters"]["ok"] is True


def test_check_table() -> None:
    r = nscg("check")
    assert r.returncode == 0
    assert b"cgroup v2 mode" in r.stdout and b"clone3" in r.stdout
