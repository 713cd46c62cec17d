"""Images: run a sandbox from an OCI or Docker image, its layers stacked copy-on-write.

Read an image without a daemon (:meth:`Image.open`), unpack its layers once
into a shared :class:`Store`, and run it (:meth:`nscg.RootFS.image`,
:meth:`nscg.Container.from_image`) or flatten it (:meth:`Image.unpack`).
See docs/images.md.
"""

from __future__ import annotations

from nscg.images._apply import Stats, UnpackLimits
from nscg.images.config import HistoryEntry, ImageConfig
from nscg.images.errors import (
    BlobError,
    DigestMismatchError,
    ImageError,
    ImageFormatError,
    LayerError,
    TagNotFoundError,
)
from nscg.images.image import Image, Layer, this_platform
from nscg.images.store import ImageRecord, Store, default_store_path

__all__ = [
    "BlobError",
    "DigestMismatchError",
    "HistoryEntry",
    "Image",
    "ImageConfig",
    "ImageError",
    "ImageFormatError",
    "ImageRecord",
    "Layer",
    "LayerError",
    "UnpackLimits",
    "Stats",
    "Store",
    "TagNotFoundError",
    "default_store_path",
    "this_platform",
]
