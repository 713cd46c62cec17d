"""Overlay roots and host owners: who owns a lower's files when root inside is not host root.

A root caller's sandbox maps its ids 0..65535 to an unprivileged host range. An
overlay whose lowers are not the host's ``/`` (an image directory) sees them
through idmapped mounts with the sandbox's maps: the lower's root files are the
sandbox root's, so it can modify, chmod, chown, delete and rename them (copy-ups
go to the upper; the lower is never written). Owners outside 0..65535 show as
the overflow id and their files stay the kernel's to refuse. The host's view
(``/`` as a lower) keeps host owners: its root-only files stay unreadable.
See docs/security.md, "Overlay roots and host owners".
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import nscg
from nscg import Container, RootFS
from nscg import namespaces as ns_mod
from nscg.capabilities import Capabilities
from nscg.errors import SpecError
from nscg.rootfs import Overlay
from tests.conftest import need_root, run_as_nobody

FAR = 200_000  # an owner outside every sandbox's 0..65535


def snapshot(d: Path) -> dict[str, tuple[int, int, int, str]]:
    """Every entry of ``d``: (uid, gid, mode, sha256 of a file's content)."""
    out = {}
    for p in [d, *sorted(d.rglob("*"))]:
        st = os.lstat(p)
        h = hashlib.sha256(p.read_bytes()).hexdigest() if stat.S_ISREG(st.st_mode) else ""
        out[str(p.relative_to(d))] = (st.st_uid, st.st_gid, st.st_mode, h)
    return out


@pytest.fixture
def image() -> Iterator[Path]:
    """A lower directory of host-root files and files of an id outside any range."""
    need_root()
    d = Path(tempfile.mkdtemp(prefix="nscg-image-", dir="/var/tmp"))
    d.chmod(0o755)
    (d / "d").mkdir(mode=0o755)
    (d / "fard").mkdir(mode=0o777)
    files = {
        "rootfile": (0, 0o644),
        "secret": (0, 0o600),
        "chm": (0, 0o644),
        "d/inner": (0, 0o644),
        "del": (0, 0o644),
        "ren": (0, 0o644),
        "far": (FAR, 0o666),
        "fardel": (FAR, 0o644),
        "farren": (FAR, 0o644),
        "fard/x": (FAR, 0o644),
    }
    for name, (owner, mode) in files.items():
        (d / name).write_text(name)
        os.chown(d / name, owner, owner)
        (d / name).chmod(mode)
    os.chown(d / "fard", FAR, FAR)
    yield d
    shutil.rmtree(d, ignore_errors=True)


OPS = """
import errno, json, os
def t(fn):
    try:
        r = fn()
        return "ok" if r is None else r
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
def app(p):
    with open(p, "a") as f:
        f.write("+")
def read(p):
    with open(p) as f:
        return f.read()
m = "/mnt"
out = {
    "ids": {n: [os.lstat(f"{m}/{n}").st_uid, os.lstat(f"{m}/{n}").st_gid]
            for n in ("rootfile", "secret", "far", "d", ".")},
    "read_secret": t(lambda: read(f"{m}/secret")),
    "append_root": t(lambda: app(f"{m}/rootfile")),
    "chmod_root": t(lambda: os.chmod(f"{m}/chm", 0o600)),
    "chown_in_range": t(lambda: os.chown(f"{m}/d/inner", 5, 6)),
    "chown_out_of_range": t(lambda: os.chown(f"{m}/rootfile", 70000, -1)),
    "delete_root": t(lambda: os.unlink(f"{m}/del")),
    "rename_root": t(lambda: os.rename(f"{m}/ren", f"{m}/ren2")),
    "append_far": t(lambda: app(f"{m}/far")),
    "read_far": t(lambda: read(f"{m}/far")),
    "chmod_far": t(lambda: os.chmod(f"{m}/far", 0o600)),
    "rename_far": t(lambda: os.rename(f"{m}/farren", f"{m}/farren2")),
    "delete_far": t(lambda: os.unlink(f"{m}/fardel")),
    "new_in_far_dir": t(lambda: app(f"{m}/fard/new")),
    "after": {n: [os.lstat(f"{m}/{n}").st_uid, os.lstat(f"{m}/{n}").st_gid,
                  oct(os.lstat(f"{m}/{n}").st_mode & 0o7777)] for n in ("chm", "d/inner")},
}
print(json.dumps(out))
"""


def _image_root(image: Path, **kw: object) -> Container:
    root = RootFS.host().then(Overlay((str(image),), dest="/mnt", **kw))  # type: ignore[arg-type]
    return Container().with_rootfs(root).with_capabilities(Capabilities.docker_default())


def _run(c: Container) -> tuple[dict[str, object], nscg.Result]:
    r = c.run(["python3", "-c", OPS], capture_output=True)
    assert r.returncode == 0, r.stderr
    return json.loads((r.stdout or b"").decode().strip().splitlines()[-1]), r


def test_an_image_lowers_root_files_are_the_sandbox_roots(image: Path) -> None:
    """As root with the default mapping: the payload's root owns the lower's root files."""
    before = snapshot(image)
    out, r = _run(_image_root(image))
    assert out["ids"] == {
        "rootfile": [0, 0],
        "secret": [0, 0],
        "far": [65534, 65534],  # not the sandbox's: the overflow id
        "d": [0, 0],
        ".": [0, 0],
    }
    assert out["read_secret"] == "secret"  # its own file (an image's, not the host's)
    assert out["append_root"] == "ok"
    assert out["chmod_root"] == "ok"
    assert out["chown_in_range"] == "ok"
    assert out["chown_out_of_range"] == "EINVAL"  # no such id in the sandbox
    assert out["delete_root"] == "ok"
    assert out["rename_root"] == "ok"
    assert out["after"] == {"chm": [0, 0, "0o600"], "d/inner": [5, 6, "0o644"]}
    # an owner the sandbox does not have (the overflow id): readable by its
    # mode, otherwise untouchable: the kernel refuses to write, delete or
    # rename an inode whose owner has no id in the caller's view
    assert out["read_far"] == "far"
    assert out["append_far"] == "EACCES"
    assert out["chmod_far"] in ("EPERM", "EOVERFLOW")
    assert out["rename_far"] == "EOVERFLOW"
    assert out["delete_far"] == "EOVERFLOW"
    assert out["new_in_far_dir"] == "EACCES"  # a 0777 directory of an unmapped owner
    ch = r.changes
    assert ch is not None and not ch.truncated
    assert ch.modified == {"/mnt/rootfile", "/mnt/chm", "/mnt/d/inner"}
    assert ch.added == {"/mnt/ren2"}
    assert ch.deleted == {"/mnt/del", "/mnt/ren"}
    assert snapshot(image) == before  # the lower is never written


def test_another_payload_user_cannot_read_the_images_root_only_files(image: Path) -> None:
    r = _image_root(image).with_user(1000, 1000).run(["cat", "/mnt/secret"], capture_output=True)
    assert r.returncode != 0 and b"Permission denied" in (r.stderr or b"")


def test_a_persistent_upper_holds_the_sandboxs_ids_not_host_root(image: Path) -> None:
    rr = ns_mod.root_range()
    before = snapshot(image)
    with tempfile.TemporaryDirectory(dir="/var/tmp", prefix="nscg-upper-") as up:
        os.chmod(up, 0o755)  # (the sandbox's root, not host root, looks the upper up)
        out, r = _run(_image_root(image, upper=os.path.join(up, "u")))
        assert out["append_root"] == "ok" and out["chmod_root"] == "ok"
        st = os.lstat(os.path.join(up, "u", "rootfile"))
        # copied up as the sandbox's root: an unprivileged host id, not host root
        assert (st.st_uid, st.st_gid) == (rr.uid, rr.gid)
        assert Path(up, "u", "rootfile").read_text() == "rootfile+"
        assert r.changes is not None
        assert r.changes.modified == {"/mnt/rootfile", "/mnt/chm", "/mnt/d/inner"}
    assert snapshot(image) == before


def test_the_host_view_keeps_host_owners(image: Path) -> None:
    """RootFS.overlay() over the host's /: root-only host files stay unreadable."""
    before = snapshot(image)
    rel = "/" + str(image).lstrip("/")
    code = f"""
import errno, json, os
def t(fn):
    try:
        fn(); return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
def app(p):
    with open(p, "a") as f:
        f.write("+")
print(json.dumps({{
    "shadow": t(lambda: open("/etc/shadow").read()),
    "secret": t(lambda: open("{rel}/secret").read()),
    "owner": os.stat("{rel}/rootfile").st_uid,
    "append_root": t(lambda: app("{rel}/rootfile")),
    "chmod_root": t(lambda: os.chmod("{rel}/rootfile", 0o666)),
}}))
"""
    c = Container().with_rootfs(RootFS.overlay()).with_capabilities(Capabilities.docker_default())
    r = c.run(["python3", "-c", code], capture_output=True)
    assert r.returncode == 0, r.stderr
    out = json.loads((r.stdout or b"").decode().strip().splitlines()[-1])
    assert out == {
        "shadow": "EACCES",
        "secret": "EACCES",
        "owner": 65534,
        "append_root": "EACCES",
        "chmod_root": "EPERM",
    }
    assert snapshot(image) == before
    # the host's / by another name is the host's view too
    assert not Overlay((str(image) + "/../../..",)).lowers_idmapped()


def test_idmap_lowers_true_over_an_image_without_a_user_namespace_is_plain(image: Path) -> None:
    """Without a user namespace (root is host root) nothing is idmapped."""
    c = Container().without_namespaces("user")
    root = RootFS.host().then(Overlay((str(image),), dest="/mnt", idmap=True))
    r = c.with_rootfs(root).run(["stat", "-c", "%u", "/mnt/far"], capture_output=True)
    assert r.returncode == 0 and (r.stdout or b"").strip() == str(FAR).encode()


def test_the_default_choice_and_bad_values() -> None:
    assert not Overlay(("/",)).lowers_idmapped()
    assert Overlay(("/var/tmp",)).lowers_idmapped()
    assert not Overlay(("/var/tmp", "/"), idmap=None).lowers_idmapped()
    assert Overlay(("/",), idmap=True).lowers_idmapped()
    assert not Overlay(("/var/tmp",), idmap=False).lowers_idmapped()
    assert RootFS.overlay(["/var/tmp"], idmap_lowers=False).overlays()[0].idmap is False
    with pytest.raises(SpecError, match="idmap must be a bool"):
        Overlay(("/var/tmp",), idmap="yes")  # type: ignore[arg-type]


@pytest.mark.rootless
def test_rootless_lowers_keep_their_owners(image: Path) -> None:
    """A rootless caller cannot idmap: idmap_lowers changes nothing, root files stay root's."""
    got = run_as_nobody(
        f"""
        import json, nscg
        from nscg.rootfs import Overlay
        out = {{}}
        for idmap in (None, True, False):
            root = nscg.RootFS.host().then(Overlay(({str(image)!r},), dest="/mnt", idmap=idmap))
            script = "cat /mnt/secret 2>/dev/null || echo refused; stat -c %u /mnt/rootfile"
            r = nscg.Container().with_rootfs(root).run(["sh", "-c", script], capture_output=True)
            out[str(idmap)] = [r.returncode, r.stdout.decode().split()]
        print(json.dumps(out))
        """
    )
    for k in ("None", "True", "False"):
        assert got[k] == [0, ["refused", "65534"]], got


def test_a_lower_that_cannot_be_idmapped_is_a_clear_error_and_leaves_nothing() -> None:
    """idmap=True on a filesystem without idmapped mounts (procfs): UnsupportedError."""
    need_root()
    fds = len(os.listdir("/proc/self/fd"))
    root = RootFS.host().then(Overlay(("/proc/sys",), dest="/mnt", idmap=True))
    with pytest.raises(nscg.UnsupportedError, match="overlay lower '/proc/sys' cannot be idmapped"):
        Container().with_rootfs(root).run(["true"])
    assert len(os.listdir("/proc/self/fd")) == fds
