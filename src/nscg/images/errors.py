"""The exceptions of :mod:`nscg.images`.

Every one derives from :class:`ImageError`, itself an :class:`nscg.NscgError`;
each names the image, the blob (by digest) or the layer entry at fault. Like
every exception of nscg they are exported at the top level (``nscg.LayerError``)
and report ``__module__ == "nscg"``.
"""

from __future__ import annotations

from nscg.errors import NscgError

__all__ = [
    "BlobError",
    "DigestMismatchError",
    "ImageError",
    "ImageFormatError",
    "LayerError",
    "TagNotFoundError",
]


def _restore(cls: type[ImageError], message: str, state: dict[str, object]) -> ImageError:
    """Unpickle an ImageError: its message and attributes, without calling ``__init__``."""
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    err.__dict__.update(state)
    return err


class ImageError(NscgError):
    """Base class of the errors of reading, verifying or unpacking an image."""

    __module__ = "nscg"

    def __reduce__(self) -> tuple[object, ...]:
        """Pickle with the attributes (the subclasses' ``__init__`` take keywords)."""
        return (_restore, (type(self), str(self), dict(self.__dict__)))


class ImageFormatError(ImageError, ValueError):
    """The image is not a valid OCI layout, OCI archive or Docker archive.

    Raised for malformed JSON, a missing ``index.json``/``manifest.json``, an
    unknown media type or compression, or a config that is not an image config.
    """

    __module__ = "nscg"


class TagNotFoundError(ImageError, LookupError):
    """The tag (or this machine's platform) is not in the image.

    Attributes:
        tag: the tag asked for (or None).
        available: the tags (or platforms) the image has.
    """

    __module__ = "nscg"

    def __init__(self, message: str, *, tag: str | None, available: tuple[str, ...]) -> None:
        super().__init__(message)
        self.tag = tag
        self.available = available


class BlobError(ImageError):
    """A blob is missing, truncated or unreadable.

    Attributes:
        digest: the blob's digest (``sha256:...``).
    """

    __module__ = "nscg"

    def __init__(self, message: str, *, digest: str) -> None:
        super().__init__(message)
        self.digest = digest


class DigestMismatchError(BlobError):
    """A blob's content does not have the digest (or the size) that names it.

    Attributes:
        digest: the expected digest.
        actual: the digest of the content read.
    """

    __module__ = "nscg"

    def __init__(self, message: str, *, digest: str, actual: str) -> None:
        super().__init__(message, digest=digest)
        self.actual = actual


class LayerError(ImageError):
    """A layer's tar stream breaks the rules: nothing of it was kept.

    Raised for entries that would leave the layer (``..``, a path through a
    symlink, a hard link to a file that is not in the layer), whiteouts of
    ``.`` or ``..``, entries past the store's limits (a tar bomb) and tar
    streams that cannot be read.

    Attributes:
        digest: the layer's digest.
        entry: the offending entry's name in the tar ("" for the stream itself).
    """

    __module__ = "nscg"

    def __init__(self, message: str, *, digest: str, entry: str = "") -> None:
        super().__init__(message)
        self.digest = digest
        self.entry = entry
