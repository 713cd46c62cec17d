"""Reading an image without a daemon: OCI layouts, OCI archives, Docker archives."""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import json
import os
import platform
import shutil
import subprocess
import tarfile
import threading
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import IO, Any, cast

import attrs

from nscg.errors import UnsupportedError
from nscg.images._apply import Applier, UnpackLimits, rmtree
from nscg.images._source import Source, open_source, parse_digest
from nscg.images.config import ImageConfig
from nscg.images.errors import (
    BlobError,
    DigestMismatchError,
    ImageError,
    ImageFormatError,
    LayerError,
    TagNotFoundError,
)

__all__ = ["Image", "Layer", "this_platform"]

MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
_INDEXES = (MT_OCI_INDEX, MT_DOCKER_LIST)
_MANIFESTS = (MT_OCI_MANIFEST, MT_DOCKER_MANIFEST)
_CONFIGS = (MT_OCI_CONFIG, MT_DOCKER_CONFIG)

#: layer media type -> compression
LAYER_TYPES = {
    "application/vnd.oci.image.layer.v1.tar": "none",
    "application/vnd.oci.image.layer.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd": "zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar": "none",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": "zstd",
    "application/vnd.docker.image.rootfs.diff.tar": "none",
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": "gzip",
    "application/vnd.docker.image.rootfs.diff.tar.zstd": "zstd",
}
REF_NAME = "org.opencontainers.image.ref.name"
_ARCH = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv7l": "arm",
    "armv6l": "arm",
    "i386": "386",
    "i686": "386",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}


def this_platform() -> str:
    """This machine's platform as an image index names it, e.g. ``linux/amd64``."""
    m = platform.machine()
    return f"linux/{_ARCH.get(m, m)}"


@attrs.frozen
class Layer:
    """One layer of an image.

    Attributes:
        digest: the digest of the blob as stored (compressed or not).
        diff_id: the digest of the uncompressed tar (the store's key).
        media_type: the blob's media type.
        compression: ``"none"``, ``"gzip"`` or ``"zstd"``.
        size: the blob's size in bytes (-1 when the archive does not say).
        path: the blob's file in the image's directory or archive.
    """

    digest: str
    diff_id: str
    media_type: str
    compression: str
    size: int
    path: str


def _json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise ImageFormatError(f"{what}: not valid JSON ({e})") from None


def _obj(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ImageFormatError(f"{what}: expected a JSON object, got {type(value).__name__}")
    return value


def _descriptor(d: object, what: str) -> tuple[str, str, int]:
    d = _obj(d, what)
    digest = d.get("digest")
    parse_digest(digest, f"{what} digest")
    size = d.get("size")
    if not isinstance(size, int) or size < 0:
        raise ImageFormatError(f"{what} {digest}: size must be a non-negative integer")
    mt = d.get("mediaType", "")
    return str(mt), str(digest), size


@attrs.frozen
class Image:
    """An image read from a directory or archive: its config and its layers.

    Open one with :meth:`open`; an Image is a value (the location, the chosen
    manifest's digests and the parsed config), it holds no open file. Every
    blob it reads is verified against its digest.

    Attributes:
        path: the OCI layout directory, OCI archive or Docker archive.
        kind: ``"dir"``, ``"oci-archive"`` or ``"docker-archive"``.
        tag: the tag chosen (None: the only image of the container).
        manifest_digest: the manifest's digest ("" for a Docker archive, which has none).
        config_digest: the config blob's digest: the image's id.
        config: the parsed configuration.
        layers: the layers, bottom first.
    """

    __module__ = "nscg.images"

    path: str
    kind: str
    tag: str | None
    manifest_digest: str
    config_digest: str
    config: ImageConfig
    layers: tuple[Layer, ...]

    @property
    def id(self) -> str:
        """The image's id: its config digest (as ``docker images --digests`` shows it)."""
        return self.config_digest

    @classmethod
    def open(cls, path: str | os.PathLike[str], tag: str | None = None) -> Image:
        """Read the image at ``path`` (no daemon, no registry).

        Args:
            path: an OCI image layout directory, an OCI archive (a tar of one:
                ``podman save --format oci-archive``, ``skopeo copy ...
                oci-archive:``) or a Docker archive (``docker save``,
                ``podman save --format docker-archive``).
            tag: the tag to pick (``org.opencontainers.image.ref.name`` of an
                OCI index; ``name:tag`` or ``tag`` of a Docker archive's
                ``RepoTags``). None: the only image there is. A multi-platform
                index chooses this machine's platform (:func:`this_platform`).

        Raises:
            ImageFormatError: not an image, malformed JSON, an unknown media type.
            TagNotFoundError: no such tag (or platform); ``available`` lists them.
            BlobError, DigestMismatchError: a blob is missing or does not match its digest.
        """
        where = os.fspath(path)
        src = open_source(where)
        if src.kind == "docker-archive":
            return _open_docker(src, tag)
        return _open_oci(src, tag)

    @property
    def source(self) -> Source:
        """The container of the blobs (opened again: an Image holds no files)."""
        return open_source(self.path)

    def unpack(self, dest: str | os.PathLike[str], *, limits: UnpackLimits | None = None) -> None:
        """Write the image's merged file tree into ``dest`` (like ``umoci unpack``).

        ``dest`` must not exist or be an empty directory. Layers are applied in
        order: whiteouts delete, opaque directories are emptied of what lower
        layers had. As root owners, devices and every xattr are kept; rootless
        every file is the caller's and device nodes are skipped. Every blob is
        verified against its digest; on any error ``dest`` is removed.

        Args:
            dest: the directory to write.
            limits: an :class:`nscg.images.UnpackLimits` (default: the store's defaults).

        Raises:
            LayerError, BlobError, DigestMismatchError: as for the store.
        """
        flatten(self, os.fspath(dest), limits if limits is not None else UnpackLimits())

    @contextmanager
    def open_layer(self, layer: Layer) -> Iterator[tarfile.TarFile]:
        """The layer's tar stream, decompressed and verified as it is read.

        On leaving the block without an exception the whole blob was read: a
        digest or diff_id mismatch (or a truncated blob) then raises
        DigestMismatchError. Use the content only once the block has left
        without error.
        """
        dec = _Decoder(self.source, layer)
        try:
            try:
                # the stream is closed by dec.close()
                yield tarfile.open(fileobj=cast(IO[bytes], dec.inner), mode="r|", bufsize=1 << 16)  # noqa: SIM115
            except _DECODE_ERRORS as e:
                raise dec.blame(e) from None
            dec.finish()
        finally:
            dec.close()


#: what a damaged or lying blob raises while it is decoded
_DECODE_ERRORS = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile)


class _Decoder:
    """blob -> (sha256 of the blob) -> decompression -> (sha256: the diff_id) -> tar."""

    def __init__(self, src: Source, layer: Layer) -> None:
        self.layer = layer
        self.raw = src.open(layer.path, digest=layer.digest)
        self.outer = _Hashing(self.raw, layer.digest, layer.size)
        self.proc: subprocess.Popen[bytes] | None = None
        self.feeder: threading.Thread | None = None
        self.feed_errors: list[BaseException] = []
        stream: IO[bytes] | gzip.GzipFile | _Hashing
        try:
            if layer.compression == "gzip":
                stream = gzip.GzipFile(fileobj=cast(IO[bytes], self.outer), mode="rb")
            elif layer.compression == "zstd":
                self.proc, self.feeder = _zstd(self.outer, layer, self.feed_errors)
                assert self.proc.stdout is not None
                stream = self.proc.stdout
            else:
                stream = self.outer
        except BaseException:
            self.close()
            raise
        self.inner = _Hashing(stream, layer.diff_id, -1)

    def blame(self, e: BaseException) -> ImageError:
        """The error to raise for a decoding error: a blob that lies about its digest first."""
        try:
            self._end()
            self.outer.check()
        except DigestMismatchError as mismatch:
            return mismatch
        except (OSError, EOFError, ImageError):
            pass
        return LayerError(
            f"layer {self.layer.digest}: unreadable ({type(e).__name__}: {e})",
            digest=self.layer.digest,
        )

    def _end(self) -> None:
        """Read the rest of the blob (through the zstd feeder when there is one)."""
        if self.feeder is not None:
            if self.proc is not None and self.proc.stdout is not None:
                while self.proc.stdout.read(1 << 20):
                    pass
            self.feeder.join()
        self.outer.drain()

    def finish(self) -> None:
        """After the tar's end: every byte read and every digest checked."""
        self.inner.drain()
        self._end()
        if self.feed_errors:
            raise self.feed_errors[0]
        self.outer.check()
        if self.proc is not None and self.proc.wait() != 0:
            raise LayerError(
                f"layer {self.layer.digest}: zstd -d failed with status {self.proc.returncode}",
                digest=self.layer.digest,
            )
        self.inner.check()

    def close(self) -> None:
        """Stop zstd and the feeder, close the blob."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self.proc.wait()
        if self.feeder is not None:
            self.feeder.join()
        self.raw.close()


def _zstd(
    outer: _Hashing, layer: Layer, errors: list[BaseException]
) -> tuple[subprocess.Popen[bytes], threading.Thread]:
    """``zstd -d`` fed from ``outer`` by a thread (the blob is hashed as it goes in)."""
    exe = shutil.which("zstd")
    if exe is None:
        raise UnsupportedError(
            f"layer {layer.digest} is zstd-compressed and the zstd program is not on PATH: "
            "install it (apt-get install zstd)",
            feature="zstd",
        )
    proc = subprocess.Popen(
        [exe, "-d", "-c", "-q"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip

    def feed() -> None:
        assert proc.stdin is not None
        try:
            while chunk := outer.read(1 << 20):
                proc.stdin.write(chunk)
        except BrokenPipeError:
            pass
        except BaseException as e:  # handed to the reading thread
            errors.append(e)
        finally:
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()

    t = threading.Thread(target=feed, name="nscg-zstd-feed", daemon=True)
    t.start()
    return proc, t


class _Hashing:
    """A reader that hashes what passes through and checks it against a digest."""

    def __init__(self, f: IO[bytes] | Any, digest: str, size: int) -> None:
        alg, self.hexpart = parse_digest(digest)
        self.f = f
        self.digest = digest
        self.size = size
        self.h = hashlib.new(alg)
        self.n = 0

    def read(self, n: int = -1) -> bytes:
        data: bytes = self.f.read(n)
        self.h.update(data)
        self.n += len(data)
        return data

    def drain(self) -> None:
        while self.read(1 << 20):
            pass

    def check(self) -> None:
        actual = self.h.hexdigest()
        alg = self.digest.partition(":")[0]
        if actual != self.hexpart:
            raise DigestMismatchError(
                f"blob {self.digest}: content has digest {alg}:{actual}"
                + (
                    f" ({self.n} of {self.size} bytes: truncated)"
                    if 0 <= self.n < self.size
                    else ""
                ),
                digest=self.digest,
                actual=f"{alg}:{actual}",
            )
        if self.size >= 0 and self.n != self.size:
            raise DigestMismatchError(
                f"blob {self.digest}: {self.n} bytes, the descriptor says {self.size}",
                digest=self.digest,
                actual=f"{alg}:{actual}",
            )


# ------------------------------------------------------------------ OCI
def _pick(src: Source, descs: Sequence[Any], tag: str | None, what: str) -> dict[str, Any]:
    """The index entry for ``tag`` (or the only one)."""
    entries = [_obj(d, what) for d in descs]
    if tag is not None:
        found = [d for d in entries if (d.get("annotations") or {}).get(REF_NAME) == tag]
        if not found:
            tags = tuple(sorted({str((d.get("annotations") or {}).get(REF_NAME)) for d in entries}))
            raise TagNotFoundError(
                f"{src.path}: no image tagged {tag!r} (tags: {', '.join(tags) or 'none'})",
                tag=tag,
                available=tags,
            )
        return found[0]
    digests = {d.get("digest") for d in entries}
    if len(digests) != 1:
        tags = tuple(sorted({str((d.get("annotations") or {}).get(REF_NAME)) for d in entries}))
        raise TagNotFoundError(
            f"{src.path}: holds {len(digests)} images; choose one by tag "
            f"({', '.join(tags) or 'none tagged'})",
            tag=None,
            available=tags,
        )
    return entries[0]


def _by_platform(src: Source, manifests: Sequence[Any], digest: str) -> dict[str, Any]:
    want_os, want_arch = this_platform().split("/")
    seen = []
    for entry in manifests:
        d = _obj(entry, f"index {digest} entry")
        p = _obj(d.get("platform") or {}, f"index {digest} platform")
        seen.append(f"{p.get('os')}/{p.get('architecture')}")
        if p.get("os") == want_os and p.get("architecture") == want_arch:
            return d
    raise TagNotFoundError(
        f"{src.path}: index {digest} has no image for {this_platform()} "
        f"(platforms: {', '.join(seen) or 'none'})",
        tag=this_platform(),
        available=tuple(seen),
    )


def _open_oci(src: Source, tag: str | None) -> Image:
    index = _obj(_json(src.read_file("index.json"), f"{src.path}: index.json"), "index.json")
    manifests = index.get("manifests")
    if not isinstance(manifests, list) or not manifests:
        raise ImageFormatError(f"{src.path}: index.json lists no manifests")
    d = _pick(src, manifests, tag, "index.json entry")
    for _ in range(8):  # nested indexes: bounded
        mt, digest, size = _descriptor(d, "manifest")
        doc = _obj(_json(src.read_json_blob(digest, size), f"manifest {digest}"), digest)
        mt = mt or str(doc.get("mediaType", ""))
        if mt in _INDEXES or (not mt and "manifests" in doc):
            d = _by_platform(src, doc.get("manifests") or [], digest)
            continue
        if mt not in _MANIFESTS and not (not mt and "layers" in doc):
            raise ImageFormatError(f"{src.path}: blob {digest} has unknown media type {mt!r}")
        return _from_manifest(src, tag, digest, doc)
    raise ImageFormatError(f"{src.path}: image indexes nested more than 8 deep")


def _from_manifest(src: Source, tag: str | None, digest: str, doc: dict[str, Any]) -> Image:
    cmt, cdigest, csize = _descriptor(doc.get("config"), f"manifest {digest} config")
    if cmt and cmt not in _CONFIGS:
        raise ImageFormatError(f"{src.path}: config {cdigest} has unknown media type {cmt!r}")
    config = ImageConfig.from_json(_json(src.read_json_blob(cdigest, csize), f"config {cdigest}"))
    descs = doc.get("layers")
    if not isinstance(descs, list):
        raise ImageFormatError(f"{src.path}: manifest {digest} has no layers list")
    if len(descs) != len(config.diff_ids):
        raise ImageFormatError(
            f"{src.path}: manifest {digest} has {len(descs)} layers, "
            f"config {cdigest} {len(config.diff_ids)} diff_ids"
        )
    layers = []
    for i, ld in enumerate(descs):
        mt, ldigest, lsize = _descriptor(ld, f"manifest {digest} layer {i}")
        compression = LAYER_TYPES.get(mt)
        if compression is None:
            raise ImageFormatError(f"{src.path}: layer {ldigest} has unknown media type {mt!r}")
        diff_id = config.diff_ids[i]
        parse_digest(diff_id, f"config {cdigest} diff_id")
        name = src.blob_name(ldigest)
        if not src.exists(name):
            raise BlobError(f"{src.path}: layer blob {ldigest} is missing", digest=ldigest)
        layers.append(Layer(ldigest, diff_id, mt, compression, lsize, name))
    return Image(src.path, src.kind, tag, digest, cdigest, config, tuple(layers))


# ------------------------------------------------------------------ Docker
def _tag_matches(repo_tag: str, tag: str) -> bool:
    """Whether ``tag`` names ``repo_tag``: in full, without its registry, or its tag alone."""
    if repo_tag == tag:
        return True
    name, _, t = repo_tag.rpartition(":")
    if "/" in t:  # a port, no tag
        return False
    short = name
    for prefix in ("docker.io/library/", "docker.io/", "localhost/"):
        if short.startswith(prefix):
            short = short[len(prefix) :]
            break
    return tag in (t, f"{short}:{t}", short if t == "latest" else "")


def _sniff(src: Source, name: str, digest: str) -> str:
    with src.open(name, digest=digest) as r:
        head = r.read(4)
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head == b"\x28\xb5\x2f\xfd":
        return "zstd"
    return "none"


def _open_docker(src: Source, tag: str | None) -> Image:
    doc = _json(src.read_file("manifest.json"), f"{src.path}: manifest.json")
    if not isinstance(doc, list) or not doc:
        raise ImageFormatError(f"{src.path}: manifest.json is not a non-empty list")
    entries = [_obj(e, "manifest.json entry") for e in doc]
    if tag is not None:
        found = [e for e in entries if any(_tag_matches(t, tag) for t in e.get("RepoTags") or ())]
    else:
        found = entries
    if len(found) != 1:
        tags = tuple(sorted(t for e in entries for t in e.get("RepoTags") or ()))
        raise TagNotFoundError(
            f"{src.path}: "
            + (f"no image tagged {tag!r}" if tag is not None else f"holds {len(entries)} images")
            + f" (tags: {', '.join(tags) or 'none'})",
            tag=tag,
            available=tags,
        )
    entry = found[0]
    cname = entry.get("Config")
    if not isinstance(cname, str):
        raise ImageFormatError(f"{src.path}: manifest.json entry without Config")
    data = src.read_file(cname)
    cdigest = "sha256:" + hashlib.sha256(data).hexdigest()
    stem = os.path.basename(cname).removesuffix(".json")
    if len(stem) == 64 and all(c in "0123456789abcdef" for c in stem) and stem != cdigest[7:]:
        raise DigestMismatchError(
            f"{src.path}: config {cname} has digest {cdigest}",
            digest=f"sha256:{stem}",
            actual=cdigest,
        )
    config = ImageConfig.from_json(_json(data, f"config {cname}"))
    names = entry.get("Layers")
    if not isinstance(names, list) or len(names) != len(config.diff_ids):
        raise ImageFormatError(
            f"{src.path}: manifest.json lists {len(names or [])} layers, "
            f"the config {len(config.diff_ids)} diff_ids"
        )
    layers = [
        _docker_layer(src, name, diff_id, cdigest)
        for name, diff_id in zip(names, config.diff_ids, strict=True)
    ]
    repo_tags = entry.get("RepoTags") or []
    chosen = tag if tag is not None else (repo_tags[0] if len(repo_tags) == 1 else None)
    return Image(src.path, src.kind, chosen, "", cdigest, config, tuple(layers))


def _docker_layer(src: Source, name: object, diff_id: str, cdigest: str) -> Layer:
    """A Docker archive's layer: its compression sniffed, its digest its file's."""
    parse_digest(diff_id, f"config {cdigest} diff_id")
    if not isinstance(name, str) or not src.exists(name):
        raise BlobError(f"{src.path}: layer {name!r} ({diff_id}) is missing", digest=diff_id)
    compression = _sniff(src, name, diff_id)
    if compression == "none":
        digest, size = diff_id, src.members[os.path.normpath(name)][1]
    else:  # the blob's own digest is its file name when it is one (docker >= 25)
        parts = name.split("/")
        if len(parts) == 3 and parts[0] == "blobs":
            digest = f"{parts[1]}:{parts[2]}"
            parse_digest(digest, f"layer {name}")
        else:
            digest = _file_digest(src, name)
        size = src.members[os.path.normpath(name)][1]
    mt = {
        "none": "application/vnd.docker.image.rootfs.diff.tar",
        "gzip": "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "zstd": "application/vnd.docker.image.rootfs.diff.tar.zstd",
    }[compression]
    return Layer(digest, diff_id, mt, compression, size, name)


def _file_digest(src: Source, name: str) -> str:
    h = hashlib.sha256()
    with src.open(name) as r:
        while chunk := r.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


# ------------------------------------------------------------------ flatten
def flatten(image: Image, dest: str, limits: UnpackLimits) -> None:
    """Apply every layer of ``image`` in order into ``dest`` (see :meth:`Image.unpack`)."""
    made = False
    if os.path.lexists(dest):
        if not os.path.isdir(dest) or os.path.islink(dest) or os.listdir(dest):
            raise FileExistsError(errno.EEXIST, "not an empty directory", dest)
    else:
        os.mkdir(dest, 0o755)
        made = True
    fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    applier = Applier(fd, "flatten", privileged=os.geteuid() == 0, limits=limits)
    try:
        for layer in image.layers:
            applier.begin(layer.digest)
            with image.open_layer(layer) as tf:
                applier.apply(tf)
        applier.finish()
    except BaseException:
        applier.close()
        os.close(fd)
        fd = -1
        if made:
            rmtree(dest)
        else:
            for name in os.listdir(dest):
                full = os.path.join(dest, name)
                if os.path.isdir(full) and not os.path.islink(full):
                    rmtree(full)
                else:
                    os.unlink(full)
        raise
    finally:
        if fd >= 0:
            os.close(fd)
