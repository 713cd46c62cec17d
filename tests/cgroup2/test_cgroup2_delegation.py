"""Delegation, the "no internal processes" rule, rootless use and stale cleanup (VM only)."""

from __future__ import annotations

import json
import os
import secrets
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

import nscg
from nscg.cgroups import (
    CgroupV2,
    Limits,
    discover,
    find_stale,
    remove_stale,
)
from nscg.errors import UnsupportedError

pytestmark = pytest.mark.cgroup2

Spawn = Callable[[CgroupV2, str], "subprocess.Popen[bytes]"]
NOBODY = 65534


def _root() -> str:
    root = discover().mount_point
    assert root is not None
    return root


@pytest.fixture
def scratch() -> Iterator[str]:
    """A plain cgroup directly under the root, removed (recursively) afterwards."""
    path = os.path.join(_root(), f"nscg-test-{secrets.token_hex(4)}")
    os.mkdir(path)
    yield path
    CgroupV2(path).remove(kill=True, timeout=30)


def _pythonpath() -> str:
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(nscg.__file__)))
    return os.pathsep.join([pkg_parent, *[p for p in sys.path if p]])


def _run_child(
    cg: CgroupV2, code: str, spawn_in: Spawn, *, user: int | None = None
) -> list[dict[str, object]]:
    """Run ``python -c code`` in ``cg`` (optionally as ``user``); parse its JSON lines."""
    prefix = f"exec setpriv --reuid={user} --regid={user} --clear-groups " if user else "exec "
    env = f"PYTHONPATH={shlex.quote(_pythonpath())} "
    p = spawn_in(cg, f"{env}{prefix}{shlex.quote(sys.executable)} -c {shlex.quote(code)}")
    assert p.stdout is not None
    out = p.stdout.read().decode()
    assert p.wait(timeout=120) == 0, out
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_internal_processes_rule_is_explained(scratch: str, spawn_in: Spawn) -> None:
    holder = CgroupV2.open(scratch)
    spawn_in(holder, "sleep 1000")
    with pytest.raises(UnsupportedError, match="no internal processes") as ei:
        CgroupV2.create(Limits(memory_max="32M"), parent=scratch)
    assert ei.value.feature == "cgroup2.memory"
    assert "move_self_to_leaf" in str(ei.value)
    # without controllers to enable, a child cgroup is fine
    with CgroupV2.create(parent=scratch) as cg:
        assert os.path.dirname(cg.path) == scratch


def test_move_self_to_leaf_then_default_parent(scratch: str, spawn_in: Spawn) -> None:
    code = (
        "import json\n"
        "from nscg.cgroups import CgroupV2, Limits, move_self_to_leaf\n"
        "leaf = move_self_to_leaf()\n"
        'with CgroupV2.create(Limits(memory_max="32M", pids_max=8)) as cg:\n'
        '    print(json.dumps({"leaf": leaf, "cg": cg.path,\n'
        '        "max": cg.read("memory.max").strip()}), flush=True)\n'
    )
    (res,) = _run_child(CgroupV2.open(scratch), code, spawn_in)
    assert res["leaf"] == os.path.join(scratch, "nscg-self")
    assert str(res["cg"]).startswith(os.path.join(scratch, "nscg", "nscg-"))
    assert res["max"] == str(32 << 20)


def _delegate(path: str, uid: int) -> None:
    os.chown(path, uid, uid)
    for f in ("cgroup.procs", "cgroup.subtree_control", "cgroup.threads"):
        os.chown(os.path.join(path, f), uid, uid)


def _nobody_can_run_python() -> bool:
    r = subprocess.run(
        [
            "setpriv",
            f"--reuid={NOBODY}",
            f"--regid={NOBODY}",
            "--clear-groups",
            sys.executable,
            "-c",
            "import attrs, nscg.cgroups",
        ],
        env={**os.environ, "PYTHONPATH": _pythonpath()},
        capture_output=True,
        check=False,
    )
    return r.returncode == 0


@pytest.mark.rootless
def test_rootless_in_delegated_subtree(scratch: str, spawn_in: Spawn) -> None:
    if not _nobody_can_run_python() and os.environ.get("NSCG_V2VM") == "1":
        # inside the throw-away VM only: let uid 65534 reach the interpreter
        d = os.path.dirname(sys.executable)
        while d != "/":
            os.chmod(d, os.stat(d).st_mode | 0o005)
            d = os.path.dirname(d)
    if not _nobody_can_run_python():
        pytest.skip(f"uid {NOBODY} cannot run {sys.executable} with nscg importable")
    _delegate(scratch, NOBODY)
    leaf = os.path.join(scratch, "leaf")
    os.mkdir(leaf)  # root-owned: not delegated
    code = (
        "import json, subprocess\n"
        "from nscg.cgroups import CgroupV2, Limits\n"
        "from nscg.errors import UnsupportedError\n"
        f"parent = {scratch!r}\n"
        "try:\n"
        '    CgroupV2.create(Limits(memory_max="32M"))\n'
        '    print(json.dumps({"undelegated": "created!"}))\n'
        "except UnsupportedError as e:\n"
        '    print(json.dumps({"undelegated": e.feature, "msg": str(e)}), flush=True)\n'
        'with CgroupV2.create(Limits(memory_max="32M", pids_max=8), parent=parent) as cg:\n'
        '    p = subprocess.Popen(["sleep", "1000"])\n'
        "    cg.add_pid(p.pid)\n"
        '    print(json.dumps({"cg": cg.path, "max": cg.read("memory.max").strip(),\n'
        '        "pids": cg.pids(), "child": p.pid}), flush=True)\n'
        "    cg.kill()\n"
        "    p.wait()\n"
    )
    res = _run_child(CgroupV2.open(leaf), code, spawn_in, user=NOBODY)
    assert res[0]["undelegated"] == "cgroup2.delegation", res
    assert "Delegate=yes" in str(res[0]["msg"])
    assert str(res[1]["cg"]).startswith(os.path.join(scratch, "nscg-"))
    assert res[1]["max"] == str(32 << 20)
    assert res[1]["pids"] == [res[1]["child"]]
    assert not os.path.exists(str(res[1]["cg"]))


def test_find_and_remove_stale(spawn_in: Spawn) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    with CgroupV2.create() as live:
        parent = os.path.dirname(live.path)
        stale = os.path.join(parent, f"nscg-{dead.pid}-1-abcdef")
        os.mkdir(stale)
        inner = os.path.join(stale, "inner")
        os.mkdir(inner)
        spawn_in(CgroupV2.open(inner), "sleep 1000")
        assert find_stale() == [stale]
        assert find_stale(parent) == [stale]
        assert remove_stale() == [stale]
        assert not os.path.exists(stale)
        assert os.path.isdir(live.path)
        assert find_stale() == []
