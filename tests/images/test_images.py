"""Images as root: every archive form read, verified, unpacked, run, compared with umoci."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
from pathlib import Path
from typing import Any

import pytest

import nscg
from nscg.images import (
    Image,
    ImageFormatError,
    Store,
    TagNotFoundError,
    this_platform,
)
from nscg.images._run import read_merged, resolve_user
from nscg.namespaces import root_range
from nscg.rootfs import RootFS
from tests.conftest import child_pythonpath, need_root
from tests.images import imagebuild, treecmp
from tests.images.conftest import FORMS

Listing = dict[str, dict[str, Any]]

pytestmark = pytest.mark.root

#: what every image of imagebuild says when run with its own command
GREETING = b"hello image from /a as 1000:1002\n"


@pytest.fixture(autouse=True)
def _root() -> None:
    need_root()


@pytest.fixture(scope="module")
def oracle(images_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Listing:
    """umoci's unpack of the layout, as a listing."""
    bundle = tmp_path_factory.mktemp("umoci") / "bundle"
    return treecmp.listing(str(imagebuild.umoci_unpack(images_dir / "layout", bundle)))


def test_config_is_typed(images_dir: Path) -> None:
    img = Image.open(images_dir / "layout")
    c = img.config
    assert c.env == (("GREETING", "hello image"), ("PATH", "/bin"))
    assert c.entrypoint == ("/bin/sh", "-c")
    assert c.argv[:2] == ("/bin/sh", "-c")
    assert c.working_dir == "/a" and c.user == "app:extra"
    assert c.labels == {"org.example.test": "yes"}
    assert c.exposed_ports == ("8080/tcp",) and c.stop_signal == "SIGINT"
    assert len(c.diff_ids) == len(img.layers) == 3
    assert img.id.startswith("sha256:") and img.kind == "dir"
    assert [layer.compression for layer in img.layers] == ["gzip"] * 3


@pytest.mark.parametrize("form", FORMS)
def test_every_form_reads_the_same_image(images_dir: Path, form: str) -> None:
    img = Image.open(images_dir / form)
    ref = Image.open(images_dir / "layout")
    assert img.config.diff_ids == ref.config.diff_ids
    assert img.config.argv == ref.config.argv
    want = {
        "layout": "gzip",
        "oci-zstd": "zstd",
        "oci-plain": "none",
        "oci-archive": "gzip",
        "docker-archive": "none",
    }
    assert {layer.compression for layer in img.layers} == {want[form]}


@pytest.mark.parametrize("form", FORMS)
def test_flatten_matches_umoci(
    images_dir: Path, form: str, tmp_path: Path, oracle: Listing
) -> None:
    Image.open(images_dir / form).unpack(tmp_path / "flat")
    assert treecmp.diff(oracle, treecmp.listing(str(tmp_path / "flat"))) == []


def _merged_listing(img: Image, store: Store) -> Listing:
    """The merged view of a sandbox's overlay root, walked from the host through /proc/PID/root."""
    root = RootFS.image(img, store=store)
    only_overlay = RootFS(root.ops[:1])  # no /proc, /dev, /tmp over the image's own
    # no UTS namespace: no /etc/hosts of nscg's over the image's
    c = nscg.Container().with_rootfs(only_overlay).without_namespaces(nscg.Namespace.UTS)
    with c.spawn(["/bin/busybox", "sleep", "60"]) as p:
        try:
            rr = root_range()
            return treecmp.listing(f"/proc/{p.pid}/root", uid_shift=rr.uid, gid_shift=rr.gid)
        finally:
            p.kill()
            p.wait()


@pytest.mark.parametrize("form", FORMS)
def test_merged_view_matches_umoci(
    images_dir: Path, form: str, store_dir: Path, oracle: Listing
) -> None:
    store = Store(store_dir)
    got = _merged_listing(Image.open(images_dir / form), store)
    d = treecmp.diff(oracle, got)
    assert d == [], "\n".join(d)


@pytest.mark.parametrize("form", FORMS)
def test_from_image_runs_the_config(images_dir: Path, form: str, store_dir: Path) -> None:
    c = nscg.Container.from_image(images_dir / form, store=Store(store_dir))
    r = c.run(capture_output=True)
    assert (r.returncode, r.stdout, r.stderr) == (0, GREETING, b"")
    assert c.command == Image.open(images_dir / form).config.argv


def test_from_image_env_user_and_usual_mounts(images_dir: Path, store_dir: Path) -> None:
    c = nscg.Container.from_image(images_dir / "layout", store=Store(store_dir))
    r = c.run(
        ["sh", "-c", "env; id; cat /etc/hosts; ls -d /proc/1 /dev/null /tmp"],
        capture_output=True,
    )
    assert r.stdout is not None
    out = r.stdout.decode()
    assert r.returncode == 0, r.stderr
    assert "GREETING=hello image" in out and "PATH=/bin" in out and "HOME=/home/app" in out
    assert "uid=1000(app) gid=1002(extra)" in out
    assert "127.0.1.1" in out  # nscg's /etc/hosts over the image's
    assert "/proc/1" in out and "/dev/null" in out


def test_changes_and_persistent_upper(images_dir: Path, store_dir: Path) -> None:
    store = Store(store_dir)
    upper = store_dir.parent / "upper"  # where the sandbox's root may go
    c = nscg.Container.from_image(images_dir / "layout", store=store, upper=upper).with_user(0)
    r = c.run(["sh", "-c", "echo n > /new; rm /a/keep; rm -r /opq; echo m >> /etc/passwd"])
    assert r.returncode == 0
    assert r.changes is not None
    assert r.changes.added == {"/new"}
    assert r.changes.deleted == {"/a/keep", "/opq"}
    assert r.changes.modified == {"/etc/passwd"}
    assert (upper / "new").read_text() == "n\n"
    # the layers were not written
    for lower in store.ensure(Image.open(images_dir / "layout")):
        assert not os.path.exists(os.path.join(lower, "new"))
    again = c.run(["cat", "/new"], capture_output=True)
    assert again.stdout == b"n\n"


def test_readonly_image_root(images_dir: Path, store_dir: Path) -> None:
    root = RootFS.image(images_dir / "layout", store=Store(store_dir), writable=False)
    r = nscg.Container().with_rootfs(root).run(["touch", "/x"], capture_output=True)
    assert r.returncode != 0 and r.stderr is not None and b"Read-only" in r.stderr


def test_user_resolution_in_the_image(images_dir: Path, store_dir: Path) -> None:
    lowers = tuple(reversed(Store(store_dir).ensure(Image.open(images_dir / "layout"))))
    u = resolve_user("app:extra", lowers)
    assert (u.uid, u.gid, u.groups, u.home) == (1000, 1002, (1002,), "/home/app")
    u = resolve_user("app", lowers)
    assert (u.uid, u.gid, u.groups) == (1000, 1001, (1001, 1002))
    assert resolve_user("4242:7", lowers).uid == 4242
    with pytest.raises(nscg.SpecError, match="nobody"):
        resolve_user("nobody", lowers)
    assert read_merged(lowers, "/del/me") is None  # whited out in layer 2
    assert read_merged(lowers, "/opq/x") is None  # below an opaque directory
    assert read_merged(lowers, "/a/b/c") == b"changed\n"


def test_store_shares_layers_and_gc(images_dir: Path, store_dir: Path, tmp_path: Path) -> None:
    store = Store(store_dir)
    first = Image.open(images_dir / "layout")
    store.ensure(first)
    before = store.disk_usage()
    # a second image: the same layers plus one
    second_layout = tmp_path / "second"
    shutil.copytree(images_dir / "layout", second_layout)
    extra = imagebuild.LayerTar().file("only-in-second", b"x" * 100_000)
    path = extra.write(tmp_path / "extra.tar")
    imagebuild.run("umoci", "raw", "add-layer", "--image", f"{second_layout}:t", str(path))
    second = Image.open(second_layout, "t")
    store.ensure(second)
    added = store.disk_usage() - before
    assert 100_000 <= added < 200_000, added
    assert len(store.layers()) == 4 and len(store.images()) == 2
    assert store.gc() == []
    assert store.forget(second.id)
    removed = store.gc()
    assert removed == [second.layers[-1].diff_id]
    assert store.forget(first.id)
    assert sorted(store.gc()) == sorted(set(first.config.diff_ids))
    assert store.layers() == [] and os.listdir(store_dir / "tmp") == []


_UNPACK = """
import sys
from nscg.images import Image, Store
Store(sys.argv[1]).ensure(Image.open(sys.argv[2]))
"""


def test_concurrent_unpacks_make_one_copy(images_dir: Path, store_dir: Path) -> None:
    """Threads and processes unpacking the same image at once: one copy of each layer."""
    img = Image.open(images_dir / "oci-zstd")
    env = {**os.environ, "PYTHONPATH": child_pythonpath()}
    argv = [sys.executable, "-c", _UNPACK, str(store_dir), str(images_dir / "layout")]
    procs = [subprocess.Popen(argv, env=env) for _ in range(3)]
    errors: list[BaseException] = []

    def unpack() -> None:
        try:
            Store(store_dir).ensure(img)
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=unpack) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    assert errors == []
    store = Store(store_dir)
    assert sorted(store.layers()) == sorted(set(img.config.diff_ids))
    assert os.listdir(store_dir / "tmp") == []
    assert sorted(os.listdir(store_dir / "layers" / "sha256")) == sorted(
        d.split(":")[1] for d in set(img.config.diff_ids)
    )
    for diff_id in img.config.diff_ids:
        with open(os.path.join(store.layer_dir(diff_id), "layer.json")) as f:
            assert json.load(f)["diff_id"] == diff_id
        assert os.stat(store.layer_dir(diff_id)).st_mode & 0o777 == 0o555


def _index_with_platforms(images_dir: Path, tmp_path: Path) -> Path:
    lay = tmp_path / "multi"
    shutil.copytree(images_dir / "layout", lay)
    index = json.loads((lay / "index.json").read_text())
    (desc,) = index["manifests"]
    other_arch = "s390x" if this_platform() != "linux/s390x" else "amd64"
    platforms = [
        {**desc, "platform": {"os": "linux", "architecture": other_arch}},
        {
            **desc,
            "platform": dict(zip(("os", "architecture"), this_platform().split("/"), strict=True)),
        },
    ]
    for p in platforms:
        p.pop("annotations", None)
    body = json.dumps({"schemaVersion": 2, "mediaType": imagebuild_index_type(),
                       "manifests": platforms}).encode()  # fmt: skip
    import hashlib

    digest = hashlib.sha256(body).hexdigest()
    (lay / "blobs" / "sha256" / digest).write_bytes(body)
    index["manifests"] = [
        {"mediaType": imagebuild_index_type(), "digest": f"sha256:{digest}", "size": len(body),
         "annotations": {"org.opencontainers.image.ref.name": "multi"}},
        desc,
    ]  # fmt: skip
    (lay / "index.json").write_text(json.dumps(index))
    return lay


def imagebuild_index_type() -> str:
    return "application/vnd.oci.image.index.v1+json"


def test_tags_and_platforms(images_dir: Path, tmp_path: Path) -> None:
    lay = _index_with_platforms(images_dir, tmp_path)
    ref = Image.open(images_dir / "layout")
    multi = Image.open(lay, "multi")
    assert multi.config_digest == ref.config_digest and multi.tag == "multi"
    assert Image.open(lay, "t").config_digest == ref.config_digest
    with pytest.raises(TagNotFoundError) as e:
        Image.open(lay)  # two images: a tag is needed
    assert set(e.value.available) == {"multi", "t"}
    with pytest.raises(TagNotFoundError, match="no image tagged 'nope'"):
        Image.open(lay, "nope")
    assert Image.open(images_dir / "docker-archive", "t").tag == "t"
    assert Image.open(images_dir / "docker-archive", "example/test:t").kind == "docker-archive"
    with pytest.raises(TagNotFoundError):
        Image.open(images_dir / "docker-archive", "other")


def test_not_an_image(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    with pytest.raises(ImageFormatError, match="oci-layout"):
        Image.open(tmp_path / "d")
    (tmp_path / "f").write_bytes(b"not a tar" * 200)
    with pytest.raises(ImageFormatError):
        Image.open(tmp_path / "f")


def test_cli_run_image_and_images_commands(
    images_dir: Path, store_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from nscg.cli import main

    layout = str(images_dir / "layout")
    assert main(["run", "--store", str(store_dir), "--image", f"{layout}:t"]) == 0
    assert main(["run", "--store", str(store_dir), "--image", layout, "--", "sh", "-c",
                 "exit 3"]) == 3  # fmt: skip
    assert main(["run", "--image", layout, "--root", "host", "--", "true"]) == 2
    # --bind/--ro-bind/--tmpfs go on top of the image's root; --keep-upper keeps its writes
    data = store_dir.parent / "data"
    data.mkdir()
    (data / "in").write_text("from the host\n")
    upper = store_dir.parent / "upper"
    argv = ["run", "--store", str(store_dir), "--image", layout, "--ro-bind", str(data), "/data",
            "--tmpfs", "/scratch", "--keep-upper", str(upper), "--uid", "0", "--",
            "sh", "-c", "cat /data/in > /kept && touch /scratch/x && ls /scratch"]  # fmt: skip
    assert main(argv) == 0
    assert (upper / "kept").read_text() == "from the host\n"
    assert main(["run", "--image", layout, "--tmp-size", "1M", "--", "true"]) == 2
    capsys.readouterr()
    assert main(["images", "--store", str(store_dir), "list"]) == 0
    assert layout in capsys.readouterr().out
    assert main(["images", "--store", str(store_dir), "inspect", f"{layout}:t"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["config"]["user"] == "app:extra" and all(x["unpacked"] for x in doc["layers"])
    Store(store_dir).forget(doc["id"])
    assert main(["images", "--store", str(store_dir), "gc"]) == 0
    assert capsys.readouterr().out.count("removed sha256:") == 3


class _Item:
    """What the plugin's marker code reads of a test item."""

    def __init__(self, mark: pytest.Mark) -> None:
        self.mark = mark

    def iter_markers(self, name: str) -> list[pytest.Mark]:
        return [self.mark] if name == "nscg" else []


def test_pytest_marker_takes_an_image(
    images_dir: Path, tmp_path: Path, store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nscg.pytest_plugin import _apply_marker, preset

    monkeypatch.setenv("NSCG_STORE", str(store_dir))  # not the host's /var/lib/nscg

    mark = pytest.mark.nscg(image=str(images_dir / "layout"), hostname="img").mark
    c, _ = _apply_marker(preset(tmp_path), _Item(mark))  # type: ignore[arg-type]  # a stand-in
    r = c.run(capture_output=True)
    assert (r.returncode, r.stdout) == (0, GREETING)
    r = c.with_user(0).run(["sh", "-c", f"hostname; echo x > {tmp_path}/out"], capture_output=True)
    assert (r.returncode, r.stdout) == (0, b"img\n")
    assert (tmp_path / "out").read_text() == "x\n"
    assert Store(store_dir).layers()  # the layers went to NSCG_STORE


def test_docker_archive_layer_as_a_tar_symlink(
    images_dir: Path, tmp_path: Path, oracle: Listing
) -> None:
    """docker save writes a layer shared by two images once, the other a symlink to it."""
    src = tarfile.open(images_dir / "docker-archive")  # noqa: SIM115 - closed by the with below
    manifest = json.loads(src.extractfile("manifest.json").read())  # type: ignore[union-attr]
    first = manifest[0]["Layers"][0]
    manifest[0]["Layers"][0] = "link/layer.tar"
    out = tmp_path / "linked.tar"
    with src, tarfile.open(out, "w") as dst:
        for m in src.getmembers():
            data = src.extractfile(m) if m.isreg() else None
            if m.name == "manifest.json":
                body = json.dumps(manifest).encode()
                m.size = len(body)
                data = io.BytesIO(body)
            elif m.name == first:
                m.name = "real/layer.tar"
            dst.addfile(m, data)
        link = tarfile.TarInfo("link/layer.tar")
        link.type, link.linkname = tarfile.SYMTYPE, "../real/layer.tar"
        dst.addfile(link)
    img = Image.open(out)
    assert img.layers[0].path == "link/layer.tar"
    img.unpack(tmp_path / "flat")
    assert treecmp.diff(oracle, treecmp.listing(str(tmp_path / "flat"))) == []


def test_zstd_layers_without_the_zstd_program(
    images_dir: Path, store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    img = Image.open(images_dir / "oci-zstd")
    with pytest.raises(nscg.UnsupportedError, match=r"zstd.*apt-get install zstd") as e:
        Store(store_dir).ensure(img)
    assert e.value.feature == "zstd"
    assert Store(store_dir).layers() == [] and os.listdir(store_dir / "tmp") == []


def test_default_store_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    from nscg.images import default_store_path

    monkeypatch.delenv("NSCG_STORE", raising=False)
    assert default_store_path() == "/var/lib/nscg"  # root
    monkeypatch.setenv("NSCG_STORE", "/srv/store")
    assert default_store_path() == "/srv/store"
    monkeypatch.delenv("NSCG_STORE")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_DATA_HOME", "/srv/data")
    assert default_store_path() == "/srv/data/nscg"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", "/home/u")
    assert default_store_path() == "/home/u/.local/share/nscg"
