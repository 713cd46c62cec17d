"""Where an image's blobs are: an OCI layout directory or a tar archive of one, or a
Docker archive. Blobs are read by byte range (``pread``): many threads can read
layers of the same archive at once, each with its own file.
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import tarfile

import attrs

from nscg.images.errors import BlobError, DigestMismatchError, ImageFormatError

__all__ = ["BlobReader", "Source", "open_source", "parse_digest"]

#: a JSON blob (index, manifest, config) larger than this is refused
MAX_JSON = 4 << 20
_HASHES = {"sha256": 64, "sha512": 128}


def parse_digest(digest: object, what: str = "digest") -> tuple[str, str]:
    """``sha256:<hex>`` as (algorithm, hex); anything else is an ImageFormatError."""
    if not isinstance(digest, str):
        raise ImageFormatError(f"{what} must be a string, got {digest!r}")
    alg, _, hexpart = digest.partition(":")
    n = _HASHES.get(alg)
    if n is None or len(hexpart) != n or any(c not in "0123456789abcdef" for c in hexpart):
        raise ImageFormatError(f"{what} {digest!r} is not a valid sha256 or sha512 digest")
    return alg, hexpart


@attrs.frozen
class Source:
    """An image's container: a layout directory (``kind="dir"``) or a tar archive.

    Attributes:
        path: the directory or archive.
        kind: ``"dir"``, ``"oci-archive"`` or ``"docker-archive"``.
        members: for archives, name -> (offset of the data, size), links resolved.
    """

    path: str
    kind: str
    members: dict[str, tuple[int, int]] = attrs.field(factory=dict, eq=False, repr=False)

    def exists(self, name: str) -> bool:
        """Whether the container has the file ``name`` (a relative path)."""
        if self.kind == "dir":
            return os.path.isfile(os.path.join(self.path, name))
        return posixpath.normpath(name) in self.members

    def open(self, name: str, *, digest: str = "") -> BlobReader:
        """A reader of the file ``name``; BlobError (naming ``digest``) if it is missing."""
        if self.kind == "dir":
            full = os.path.join(self.path, name)
            try:
                fd = os.open(full, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
            except OSError as e:
                raise BlobError(
                    f"blob {digest or name} of {self.path}: {e.strerror}", digest=digest or name
                ) from None
            return BlobReader(fd, 0, os.fstat(fd).st_size)
        where = self.members.get(posixpath.normpath(name))
        if where is None:
            raise BlobError(
                f"blob {digest or name} is not in the archive {self.path}", digest=digest or name
            )
        fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        return BlobReader(fd, *where)

    def blob_name(self, digest: str) -> str:
        """The file that holds a blob in an OCI layout."""
        alg, hexpart = parse_digest(digest)
        return f"blobs/{alg}/{hexpart}"

    def read_json_blob(self, digest: str, size: int | None) -> bytes:
        """A small blob read whole and verified against its digest (and size)."""
        if size is not None and size > MAX_JSON:
            raise ImageFormatError(f"blob {digest}: {size} bytes is too large for a JSON document")
        with self.open(self.blob_name(digest), digest=digest) as r:
            data = r.read_all(MAX_JSON, digest)
        verify(data, digest, size)
        return data

    def read_file(self, name: str) -> bytes:
        """A small file of the container (index.json, manifest.json), unverified."""
        with self.open(name) as r:
            return r.read_all(MAX_JSON, name)


def verify(data: bytes, digest: str, size: int | None) -> None:
    """Check ``data`` against ``digest`` (and ``size``)."""
    alg, hexpart = parse_digest(digest)
    actual = hashlib.new(alg, data).hexdigest()
    if actual != hexpart:
        raise DigestMismatchError(
            f"blob {digest}: content has digest {alg}:{actual}",
            digest=digest,
            actual=f"{alg}:{actual}",
        )
    if size is not None and len(data) != size:
        raise DigestMismatchError(
            f"blob {digest}: {len(data)} bytes, the descriptor says {size}",
            digest=digest,
            actual=f"{alg}:{actual}",
        )


class BlobReader(io.RawIOBase):
    """A raw reader of ``size`` bytes at ``offset`` of ``fd`` (owned; closed with the reader)."""

    def __init__(self, fd: int, offset: int, size: int) -> None:
        super().__init__()
        self.fd = fd
        self.offset = offset
        self.size = size
        self.pos = 0

    def readable(self) -> bool:
        """Always True."""
        return True

    def readinto(self, buf: memoryview | bytearray) -> int:  # type: ignore[override]  # RawIOBase's buffer type
        """Read into ``buf`` with pread; 0 at the end of the blob."""
        n = min(len(buf), self.size - self.pos)
        if n <= 0:
            return 0
        data = os.pread(self.fd, n, self.offset + self.pos)
        if not data:
            return 0
        buf[: len(data)] = data
        self.pos += len(data)
        return len(data)

    def read(self, size: int = -1) -> bytes:
        """Read up to ``size`` bytes (all that is left for -1)."""
        left = self.size - self.pos
        n = left if size is None or size < 0 else min(size, left)
        if n <= 0:
            return b""
        data = os.pread(self.fd, n, self.offset + self.pos)
        self.pos += len(data)
        return data

    def read_all(self, limit: int, what: str) -> bytes:
        """Everything, refusing more than ``limit`` bytes."""
        if self.size > limit:
            raise ImageFormatError(f"{what}: {self.size} bytes is too large for a JSON document")
        data = self.read()
        if len(data) != self.size:
            raise BlobError(f"{what}: truncated ({len(data)} of {self.size} bytes)", digest=what)
        return data

    def close(self) -> None:
        """Close the fd (idempotent)."""
        if not self.closed:
            os.close(self.fd)
        super().close()


def open_source(path: str) -> Source:
    """The container at ``path``: a layout directory, an OCI archive or a Docker archive.

    Raises:
        ImageFormatError: none of those.
        BlobError: ``path`` cannot be read.
    """
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "oci-layout")):
            raise ImageFormatError(f"{path}: a directory without 'oci-layout' is no OCI layout")
        return Source(path, "dir")
    try:
        tf = tarfile.open(path, "r:")  # noqa: SIM115 - closed by the with below
    except FileNotFoundError:
        raise BlobError(f"{path}: no such image", digest="") from None
    except (tarfile.TarError, OSError) as e:
        raise ImageFormatError(
            f"{path}: not an OCI layout directory, nor an uncompressed tar archive ({e})"
        ) from None
    with tf:
        members = _index(tf, path)
    if "oci-layout" in members and "index.json" in members:
        return Source(path, "oci-archive", members)
    if "manifest.json" in members:
        return Source(path, "docker-archive", members)
    raise ImageFormatError(
        f"{path}: a tar archive with neither 'oci-layout' + 'index.json' (OCI archive) "
        "nor 'manifest.json' (Docker archive)"
    )


def _index(tf: tarfile.TarFile, path: str) -> dict[str, tuple[int, int]]:
    """Regular members by normalized name; symlinks and hard links resolved (bounded)."""
    regular: dict[str, tuple[int, int]] = {}
    links: dict[str, str] = {}
    try:
        for m in tf:
            name = posixpath.normpath(m.name.lstrip("/"))
            if m.isreg():
                regular[name] = (m.offset_data, m.size)
                links.pop(name, None)
            elif m.issym():
                links[name] = posixpath.normpath(
                    posixpath.join(posixpath.dirname(name), m.linkname)
                )
            elif m.islnk():
                links[name] = posixpath.normpath(m.linkname.lstrip("/"))
    except (tarfile.TarError, OSError) as e:
        raise ImageFormatError(f"{path}: unreadable or truncated archive ({e})") from None
    for name, first in links.items():
        target = first
        for _ in range(16):
            if target in regular or target not in links:
                break
            target = links[target]
        if target in regular and name not in regular:
            regular[name] = regular[target]
    return regular
