"""The prepared plan's assumptions checked by the C spawn right before its clone.

A prepared plan holds for the caller's effective capabilities and, for a root
that hides the host's sockets, the path sockets ``/proc/net/unix`` listed when
its masks were computed. ``nscg_spawn`` checks both in the call that clones
(no release of the GIL of their own); a mismatch clones nothing, and the spawn
prepares again. Run in a network namespace of its own, so that no other
process's sockets change the listing meanwhile.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import child_pythonpath, need_root

pytestmark = pytest.mark.root

_CHILD = textwrap.dedent(
    """
    import json, os, socket, sys, tempfile
    import nscg
    from nscg import _spawn as sp, rootfs

    scans = []
    real = rootfs.host_socket_listing

    def counting():
        scans.append(1)
        return real()

    rootfs.host_socket_listing = counting
    d = tempfile.mkdtemp(dir="/var/tmp", prefix="nscg-checks-")
    socks = []

    def listen(name):
        s = socket.socket(socket.AF_UNIX)
        s.bind(os.path.join(d, name))
        s.listen()
        socks.append(s)
        return os.path.join(d, name)

    def reachable(path):
        code = (
            "import socket, sys\\ntry:\\n socket.socket(socket.AF_UNIX).connect(sys.argv[1])"
            "\\n print(1)\\nexcept OSError:\\n print(0)"
        )
        r = c.run([sys.executable, "-c", code, path], capture_output=True)
        return r.stdout.strip() == b"1"

    out = {}
    try:
        a = listen("a.sock")
        c = nscg.Container().with_rootfs(nscg.RootFS.host())
        out["a_reachable"] = reachable(a)
        n = len(scans)
        for _ in range(5):
            assert c.run(["/bin/true"]).returncode == 0
        out["steady_scans"] = len(scans) - n
        b = listen("b.sock")
        n = len(scans)
        out["b_reachable"] = reachable(b)
        out["stale_scans"] = len(scans) - n
        out["a_still_reachable"] = reachable(a)
        out["stale_plan"] = sp._prepare(c).masks
    finally:
        for s in socks:
            s.close()
        for name in os.listdir(d):
            os.unlink(os.path.join(d, name))
        os.rmdir(d)
    out["dir"] = d
    print(json.dumps(out))
    """
)


def test_the_c_spawn_rechecks_the_host_sockets_and_only_then_the_plan_is_made_again() -> None:
    need_root()
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare(1) is missing (util-linux)")
    env = dict(os.environ, PYTHONPATH=child_pythonpath())
    r = subprocess.run(
        [unshare, "--net", sys.executable, "-c", _CHILD],
        capture_output=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stderr.decode()
    import json

    got = json.loads(r.stdout)
    d = got["dir"]
    assert not got["a_reachable"] and not got["b_reachable"] and not got["a_still_reachable"]
    # the listing did not change: the C call found the plan current, no scan in Python
    assert got["steady_scans"] == 0
    # a new socket: the C call found the plan stale once, the spawn prepared it again
    assert got["stale_scans"] == 1
    assert sorted(got["stale_plan"]) == [f"{d}/a.sock", f"{d}/b.sock"]


def test_a_capability_dropped_after_the_first_spawn_makes_the_plan_again() -> None:
    """The prepared plan depends on the caller's effective capabilities (id maps,
    the bounding set): dropping one after the first spawn is seen by the C call."""
    need_root()
    code = textwrap.dedent(
        """
        import nscg
        from nscg import _spawn as sp
        from nscg._native import ffi, lib
        c = nscg.Container()
        assert c.run(["/bin/true"]).returncode == 0
        first = sp._prepare(c)
        # drop CAP_SYS_PTRACE (19) from this thread's effective set
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        hdr = (ctypes.c_uint32 * 2)(0x20080522, 0)
        data = (ctypes.c_uint32 * 6)()
        assert libc.capget(hdr, data) == 0
        data[0] &= ~(1 << 19)
        assert libc.capset(hdr, data) == 0
        assert c.run(["/bin/true"]).returncode == 0
        second = sp._prepare(c)
        assert second is not first and second.cap_eff == first.cap_eff & ~(1 << 19)
        print("ok")
        """
    )
    env = dict(os.environ, PYTHONPATH=child_pythonpath())
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, env=env, timeout=60, check=False
    )
    assert r.returncode == 0 and r.stdout.strip() == b"ok", r.stderr.decode()
