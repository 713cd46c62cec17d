"""Hostile layers and blobs: refused or contained, nothing written outside the store.

Each layer is a hand-made tar (Python's tarfile) added verbatim to a real
umoci-made image; the store must raise a typed error naming the layer (and
the entry), keep nothing of it and write nothing outside its directory.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import attrs
import pytest

from nscg.images import (
    BlobError,
    DigestMismatchError,
    Image,
    ImageFormatError,
    LayerError,
    Store,
    UnpackLimits,
)
from tests.images import imagebuild
from tests.images.conftest import need_image_tools

Build = Callable[[imagebuild.LayerTar], None]


def _image(tmp: Path, *layers: imagebuild.LayerTar) -> Image:
    need_image_tools()
    lay = tmp / "layout"
    imagebuild.run("umoci", "init", "--layout", str(lay))
    imagebuild.run("umoci", "new", "--image", f"{lay}:t")
    for i, t in enumerate(layers):
        path = t.write(tmp / f"l{i}.tar")
        imagebuild.run("umoci", "raw", "add-layer", "--image", f"{lay}:t", str(path))
    return Image.open(lay, "t")


def _snapshot(top: Path) -> set[str]:
    return {str(p.relative_to(top)) for p in top.rglob("*")}


@pytest.fixture
def sandbox_dir(tmp_path: Path) -> Path:
    """tmp_path/outside is a canary directory beside the store."""
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "victim").write_text("untouched\n")
    return tmp_path


def _refused(sandbox_dir: Path, store_dir: Path, *layers: imagebuild.LayerTar) -> LayerError:
    img = _image(sandbox_dir, *layers)
    before = _snapshot(sandbox_dir)
    with pytest.raises(LayerError) as e:
        Store(store_dir).ensure(img)
    store = Store(store_dir)
    bad = [layer for layer in img.layers if layer.digest == e.value.digest]
    assert bad and not any(store.has_layer(layer.diff_id) for layer in bad)
    assert os.listdir(store_dir / "tmp") == []
    assert _snapshot(sandbox_dir) == before
    assert (sandbox_dir / "outside" / "victim").read_text() == "untouched\n"
    assert not any(p.name == "pwned" for p in Path("/var/tmp").glob("pwned*"))
    return e.value


def test_dotdot_entry(sandbox_dir: Path, store_dir: Path) -> None:
    t = imagebuild.LayerTar().file("ok", b"x").file("../../../../../var/tmp/pwned", b"x")
    err = _refused(sandbox_dir, store_dir, t)
    assert "'..'" in str(err) and err.entry.endswith("pwned")


def test_write_through_an_absolute_symlink(sandbox_dir: Path, store_dir: Path) -> None:
    t = imagebuild.LayerTar().symlink("link", str(sandbox_dir / "outside")).file("link/victim")
    err = _refused(sandbox_dir, store_dir, t)
    assert "symlink" in str(err)


def test_write_through_a_relative_symlink(sandbox_dir: Path, store_dir: Path) -> None:
    t = imagebuild.LayerTar().dir("d").symlink("d/up", "../../../../..").file("d/up/var/tmp/pwned")
    _refused(sandbox_dir, store_dir, t)


def test_symlink_planted_in_a_lower_layer_is_not_followed(
    sandbox_dir: Path, store_dir: Path
) -> None:
    """Across layers each layer is its own directory: the upper's write stays in it."""
    low = imagebuild.LayerTar().symlink("etc", str(sandbox_dir / "outside"))
    high = imagebuild.LayerTar().dir("etc").file("etc/victim", b"pwned\n")
    img = _image(sandbox_dir, low, high)
    Store(store_dir).ensure(img)
    assert (sandbox_dir / "outside" / "victim").read_text() == "untouched\n"
    dest = sandbox_dir / "flat"
    img.unpack(dest)  # flattening replaces the symlink by the directory
    assert (dest / "etc").is_dir() and not (dest / "etc").is_symlink()
    assert (sandbox_dir / "outside" / "victim").read_text() == "untouched\n"


def test_hard_link_to_outside(sandbox_dir: Path, store_dir: Path) -> None:
    victim = str(sandbox_dir / "outside" / "victim")
    t = imagebuild.LayerTar().hardlink("h", victim)
    err = _refused(sandbox_dir, store_dir, t)
    assert "hard link" in str(err)
    assert os.stat(victim).st_nlink == 1


def test_hard_link_through_dotdot(sandbox_dir: Path, store_dir: Path) -> None:
    t = imagebuild.LayerTar().hardlink("h", "../../../../etc/passwd")
    _refused(sandbox_dir, store_dir, t)


@pytest.mark.parametrize("name", ["..", ".", ""])
def test_whiteout_of_dotdot(sandbox_dir: Path, store_dir: Path, name: str) -> None:
    t = imagebuild.LayerTar().dir("d").file(f"d/.wh.{name}")
    err = _refused(sandbox_dir, store_dir, t)
    assert "whiteout" in str(err) or "'..'" in str(err)


def test_reserved_overlay_xattrs_are_dropped(sandbox_dir: Path, store_dir: Path) -> None:
    t = imagebuild.LayerTar().file(
        "f", b"x", xattrs={"user.overlay.redirect": b"/etc", "trusted.overlay.opaque": b"y"}
    )
    img = _image(sandbox_dir, t)
    (root,) = Store(store_dir).ensure(img)
    assert [n for n in os.listxattr(os.path.join(root, "f")) if "overlay" in n] == []


def test_tar_bomb_past_the_entry_limit(sandbox_dir: Path, store_dir: Path) -> None:
    t = imagebuild.LayerTar()
    for i in range(2001):
        t.file(f"f{i}")
    img = _image(sandbox_dir, t)
    with pytest.raises(LayerError, match="more than 2000 entries"):
        Store(store_dir, limits=UnpackLimits(max_entries=2000)).ensure(img)
    assert Store(store_dir).layers() == [] and os.listdir(store_dir / "tmp") == []


def test_content_past_the_byte_limit(sandbox_dir: Path, store_dir: Path) -> None:
    t = imagebuild.LayerTar().file("big", b"\0" * 100_000)
    img = _image(sandbox_dir, t)
    with pytest.raises(LayerError, match="bytes of content"):
        Store(store_dir, limits=UnpackLimits(max_bytes=50_000)).ensure(img)


def _lie(img: Image, change: Callable[[bytes], bytes]) -> None:
    """Rewrite the first layer's blob in place (its name, the digest, now lies)."""
    path = Path(img.path) / img.layers[0].path
    data = path.read_bytes()
    os.chmod(path, 0o644)
    path.write_bytes(change(data))


def test_lying_digest(sandbox_dir: Path, store_dir: Path) -> None:
    img = _image(sandbox_dir, imagebuild.LayerTar().file("a", b"honest\n"))

    def swap(data: bytes) -> bytes:
        return gzip.compress(imagebuild.LayerTar().file("a", b"LIES!!\n").bytes())

    _lie(img, swap)
    with pytest.raises(DigestMismatchError) as e:
        Store(store_dir).ensure(img)
    assert e.value.digest == img.layers[0].digest and e.value.actual != e.value.digest
    assert Store(store_dir).layers() == [] and os.listdir(store_dir / "tmp") == []
    with pytest.raises(DigestMismatchError):
        img.unpack(sandbox_dir / "flat")
    assert not (sandbox_dir / "flat").exists()


def test_truncated_blob(sandbox_dir: Path, store_dir: Path) -> None:
    img = _image(sandbox_dir, imagebuild.LayerTar().file("a", os.urandom(50_000)))
    _lie(img, lambda data: data[: len(data) // 2])
    with pytest.raises(BlobError) as e:
        Store(store_dir).ensure(img)
    assert e.value.digest == img.layers[0].digest
    assert Store(store_dir).layers() == []


def test_diff_id_that_lies(sandbox_dir: Path, store_dir: Path) -> None:
    """A layer blob that matches its digest but not the config's diff_id."""
    img = _image(sandbox_dir, imagebuild.LayerTar().file("a", b"x"))
    wrong = "sha256:" + hashlib.sha256(b"something else").hexdigest()
    img2 = attrs.evolve(img, layers=(attrs.evolve(img.layers[0], diff_id=wrong),))
    with pytest.raises(DigestMismatchError) as e:
        Store(store_dir).ensure(img2)
    assert e.value.digest == wrong


def test_missing_blob_and_unknown_media_type(sandbox_dir: Path, store_dir: Path) -> None:
    img = _image(sandbox_dir, imagebuild.LayerTar().file("a", b"x"))
    lay = Path(img.path)
    manifest_path = lay / "blobs" / "sha256" / img.manifest_digest.split(":")[1]
    doc = json.loads(manifest_path.read_bytes())
    doc["layers"][0]["mediaType"] = "application/x-mystery"
    body = json.dumps(doc).encode()
    digest = hashlib.sha256(body).hexdigest()
    (lay / "blobs" / "sha256" / digest).write_bytes(body)
    index = json.loads((lay / "index.json").read_text())
    index["manifests"][0].update(digest=f"sha256:{digest}", size=len(body))
    (lay / "index.json").write_text(json.dumps(index))
    with pytest.raises(ImageFormatError, match="unknown media type 'application/x-mystery'"):
        Image.open(lay, "t")
    (lay / "blobs" / "sha256" / digest).write_bytes(body + b" ")  # the manifest now lies
    with pytest.raises(DigestMismatchError):
        Image.open(lay, "t")
    shutil.rmtree(lay / "blobs")
    with pytest.raises(BlobError):
        Image.open(lay, "t")
