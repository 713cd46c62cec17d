"""Images for an unprivileged caller (uid 65534): unpacked, run, compared with umoci --rootless."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from nscg.images._apply import rmtree
from tests.conftest import NOBODY, need_nobody_python, run_as_nobody
from tests.images.conftest import FORMS

pytestmark = [pytest.mark.rootless, pytest.mark.root]


@pytest.fixture
def nobody_dir() -> Iterator[Path]:
    """A directory uid 65534 owns."""
    need_nobody_python()
    d = Path(tempfile.mkdtemp(prefix="nscg-rootless-", dir="/var/tmp"))
    os.chmod(d, 0o755)
    os.chown(d, NOBODY, NOBODY)
    try:
        yield d
    finally:
        rmtree(str(d))


def test_rootless_unpack_run_and_compare(images_dir: Path, nobody_dir: Path) -> None:
    # the oracle: umoci unpack --rootless, as the same uid
    bundle = nobody_dir / "bundle"
    r = subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--",
         "umoci", "unpack", "--rootless", "--image", f"{images_dir / 'layout'}:t", str(bundle)],
        capture_output=True, check=False, cwd="/",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr.decode()
    out = run_as_nobody(
        f"""
        import json, os, sys
        sys.path.insert(0, {str(Path(__file__).parents[2])!r})
        import nscg
        from nscg.images import Image, Store
        from tests.images import treecmp
        top = {str(nobody_dir)!r}
        store = Store(os.path.join(top, "store"))
        # umoci makes a device node an empty file; nscg skips it (noted)
        oracle = treecmp.listing(os.path.join(top, "bundle", "rootfs"), skip=("dev/null-ish",))
        res = {{}}
        for form in {list(FORMS)!r}:
            img = Image.open(os.path.join({str(images_dir)!r}, form))
            dest = os.path.join(top, "flat-" + form)
            img.unpack(dest)
            got = treecmp.listing(dest, skip=("dev/null-ish",))
            res["flat-" + form] = treecmp.diff(oracle, got)
            # the merged view of the overlay of its layers, walked through /proc/PID/root
            only = nscg.RootFS(nscg.RootFS.image(img, store=store).ops[:1])
            box = nscg.Container().with_rootfs(only).without_namespaces(nscg.Namespace.UTS)
            with box.spawn(["/bin/busybox", "sleep", "60"]) as p:
                try:
                    got = treecmp.listing(f"/proc/{{p.pid}}/root", skip=("dev/null-ish",))
                finally:
                    p.kill()
                    p.wait()
            res["merged-" + form] = treecmp.diff(oracle, got)
            c = nscg.Container.from_image(img, store=store)
            r = c.run(capture_output=True)
            res["run-" + form] = [r.returncode, r.stdout.decode(), r.stderr.decode()]
        c = nscg.Container.from_image(img, store=store).with_user(0)
        r = c.run(["sh", "-c", "rm /a/keep && echo n > /new && ls /opq /del"],
                  capture_output=True)
        res["changes"] = [r.returncode, r.stdout.decode(), r.stderr.decode(),
                          sorted(r.changes.added), sorted(r.changes.deleted)]
        with open(store.layer_dir(img.layers[0].diff_id) + "/layer.json") as f:
            res["notes"] = json.load(f)["notes"]
        print(json.dumps(res))
        """,
        timeout=120,
    )
    for form in FORMS:
        # umoci --rootless keeps what an unprivileged user can: the same as nscg
        assert out[f"flat-{form}"] == [], "\n".join(out[f"flat-{form}"])
        assert out[f"merged-{form}"] == [], "\n".join(out[f"merged-{form}"])
        assert out[f"run-{form}"] == [0, "hello image from /a as 1000:1002\n", ""]
    code, stdout, stderr, added, deleted = out["changes"]
    assert (code, stderr) == (0, "")
    assert stdout.split() == ["/del:", "stay", "/opq:", "new"]
    assert (added, deleted) == (["/new"], ["/a/keep"])
    notes = out["notes"]
    assert notes["device nodes skipped (rootless)"] == 1
    assert notes["owners other than root not kept (rootless)"] == 2
    assert "xattr security.* not kept (rootless)" in notes
    json.dumps(notes)
    assert sys.executable
