"""``nscg images list|inspect|gc``, and the ``--image`` option of ``nscg run``."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

import attrs

from nscg.images.image import Image
from nscg.images.store import Store

__all__ = ["add_parser", "main", "open_image", "store_of"]


def add_parser(sub: Any) -> None:
    """Add the ``images`` command to the subparsers ``sub`` of ``nscg``."""
    p = sub.add_parser("images", help="the image layer store: list, inspect, gc")
    p.add_argument("--store", default=None, metavar="DIR", help="the store directory")
    isub = p.add_subparsers(dest="images_command", required=True)
    isub.add_parser("list", help="the images the store keeps layers for")
    ins = isub.add_parser("inspect", help="an image's config and layers, as JSON")
    ins.add_argument("image", metavar="PATH[:TAG]")
    isub.add_parser("gc", help="remove the layers no recorded image uses")


def store_of(path: str | None) -> Store:
    """The store at ``path`` (None: the default one)."""
    return Store() if path is None else Store(path)


def open_image(text: str) -> Image:
    """``PATH[:TAG]``: the path as given if it exists, else split at the last ``:``."""
    if os.path.exists(text) or ":" not in text:
        return Image.open(text)
    path, _, tag = text.rpartition(":")
    return Image.open(path, tag or None)


def main(args: argparse.Namespace) -> int:
    """Run ``nscg images ...``; the exit status."""
    store = store_of(args.store)
    if args.images_command == "list":
        for rec in store.images():
            print(f"{rec.id[:19]}  {len(rec.diff_ids):3d} layers  {rec.path}"
                  + (f" ({rec.tag})" if rec.tag else ""))  # fmt: skip
        return 0
    if args.images_command == "inspect":
        img = open_image(args.image)
        doc = {
            "path": img.path,
            "kind": img.kind,
            "tag": img.tag,
            "id": img.id,
            "manifest": img.manifest_digest,
            "config": attrs.asdict(img.config),
            "layers": [
                {**attrs.asdict(layer), "unpacked": store.has_layer(layer.diff_id)}
                for layer in img.layers
            ],
        }
        print(json.dumps(doc, indent=2, default=str))
        return 0
    removed = store.gc()
    for diff_id in removed:
        print(f"removed {diff_id}")
    return 0
