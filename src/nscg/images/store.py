"""The layer store: each layer unpacked once, into a directory keyed by its diff_id.

Layout of a store directory (see docs/images.md)::

    layers/sha256/<hex>/fs          the layer's files: an overlay lower
    layers/sha256/<hex>/layer.json  what was unpacked (entries, bytes, notes)
    images/<config hex>.json        an image that uses layers (written by ensure)
    locks/                          one lock file per layer, and the store's own
    tmp/                            unpacks in progress

A layer directory appears by one ``rename`` of a finished, verified unpack:
it is complete if it exists. Concurrent unpacks of a layer (threads or
processes) take the layer's lock (``flock``) and the second finds the first's
result. :meth:`Store.gc` takes the store's lock exclusively; unpacks take it
shared, so gc never removes a layer between its unpack and the image record
that keeps it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import attrs

from nscg.images._apply import Applier, Stats, UnpackLimits, rmtree
from nscg.images._source import parse_digest
from nscg.images.errors import ImageError
from nscg.images.image import Image, Layer

__all__ = ["ImageRecord", "Store", "default_store_path"]

LAYER_META = "layer.json"


def default_store_path() -> str:
    """``$NSCG_STORE`` if set, else ``/var/lib/nscg`` for root, else
    ``$XDG_DATA_HOME/nscg`` (``~/.local/share/nscg``)."""
    if os.environ.get("NSCG_STORE"):
        return os.environ["NSCG_STORE"]
    if os.geteuid() == 0:
        return "/var/lib/nscg"
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local/share")
    return os.path.join(base, "nscg")


def _path(value: str | os.PathLike[str]) -> str:
    return os.fspath(value)


@attrs.frozen
class ImageRecord:
    """An image the store keeps layers for.

    Attributes:
        id: the image's config digest.
        path: where it was read from.
        tag: its tag, if one was chosen.
        diff_ids: its layers, bottom first.
        added: when it was recorded (seconds since the epoch).
    """

    id: str
    path: str
    tag: str | None
    diff_ids: tuple[str, ...]
    added: float


@attrs.frozen
class Store:
    """A directory of unpacked layers shared by every image that has them.

    A Store is a value (a path and the limits); the files are the state.

    Attributes:
        path: the store directory (made on first use, mode 0700).
        limits: the bounds enforced on each layer's tar stream.
        workers: threads that unpack layers in parallel (None: one per CPU, at most 8).
    """

    path: str = attrs.field(factory=default_store_path, converter=_path)
    limits: UnpackLimits = attrs.field(factory=UnpackLimits)
    workers: int | None = None

    # ------------------------------------------------------------ paths
    def layer_dir(self, diff_id: str) -> str:
        """The directory of layer ``diff_id`` (holding ``fs`` and ``layer.json``)."""
        alg, hexpart = parse_digest(diff_id)
        return os.path.join(self.path, "layers", alg, hexpart)

    def layer_root(self, diff_id: str) -> str:
        """The layer's files: the directory an overlay takes as a lower."""
        return os.path.join(self.layer_dir(diff_id), "fs")

    def has_layer(self, diff_id: str) -> bool:
        """Whether layer ``diff_id`` is unpacked and complete."""
        return os.path.isfile(os.path.join(self.layer_dir(diff_id), LAYER_META))

    def _setup(self) -> None:
        # root's store: 0755, so that a sandbox whose root is an unprivileged host range
        # reaches the lowers where they cannot be idmapped (the files keep their own modes)
        mode = 0o755 if os.geteuid() == 0 else 0o700
        os.makedirs(self.path, mode=mode, exist_ok=True)
        os.makedirs(os.path.join(self.path, "layers"), mode=mode, exist_ok=True)
        for sub in ("images", "locks", "tmp"):
            os.makedirs(os.path.join(self.path, sub), mode=0o700, exist_ok=True)

    @contextlib.contextmanager
    def _lock(self, name: str, op: int) -> Iterator[None]:
        fd = os.open(
            os.path.join(self.path, "locks", name), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
        )
        try:
            fcntl.flock(fd, op)
            yield
        finally:
            os.close(fd)  # releases the lock

    # ------------------------------------------------------------ unpacking
    def ensure(self, image: Image) -> tuple[str, ...]:
        """Unpack the image's missing layers (in parallel) and record the image.

        Returns:
            the layers' directories (``fs``), bottom first: the overlay lowers
            in reverse.

        Raises:
            LayerError, BlobError, DigestMismatchError: a layer is hostile, missing or
                does not match its digest or diff_id; nothing of it is kept.
            UnsupportedError: a zstd layer and no ``zstd`` program.
        """
        self._setup()
        with self._lock("store.lock", fcntl.LOCK_SH):
            todo: dict[str, Layer] = {}
            for layer in image.layers:
                if not self.has_layer(layer.diff_id):
                    todo.setdefault(layer.diff_id, layer)
            if todo:
                workers = self.workers or min(8, os.cpu_count() or 1)
                with ThreadPoolExecutor(
                    max_workers=workers, thread_name_prefix="nscg-unpack"
                ) as ex:
                    futures = [
                        ex.submit(self.unpack_layer, image, layer) for layer in todo.values()
                    ]
                    errors = []
                    for f in futures:
                        exc = f.exception()
                        if exc is not None:
                            errors.append(exc)
                    if errors:
                        raise errors[0]
            self._record(image)
        return tuple(self.layer_root(layer.diff_id) for layer in image.layers)

    def unpack_layer(self, image: Image, layer: Layer) -> Stats | None:
        """Unpack one layer of ``image`` unless it is there; None if it was.

        Safe to call from many threads and processes at once for the same layer.
        """
        self._setup()
        _alg, hexpart = parse_digest(layer.diff_id)
        with self._lock(f"{hexpart}.lock", fcntl.LOCK_EX):
            if self.has_layer(layer.diff_id):
                return None
            tmp = tempfile.mkdtemp(prefix=f"{hexpart[:16]}-", dir=os.path.join(self.path, "tmp"))
            try:
                os.chmod(tmp, 0o755)  # the sandbox's root (not host root) walks through it
                fs = os.path.join(tmp, "fs")
                os.mkdir(fs, 0o755)
                stats = self._apply(image, layer, fs)
                meta = {
                    "diff_id": layer.diff_id,
                    "digest": layer.digest,
                    "media_type": layer.media_type,
                    "entries": stats.entries,
                    "bytes": stats.bytes,
                    "notes": stats.notes,
                    "rootless": os.geteuid() != 0,
                    "unpacked": time.time(),
                }
                with open(os.path.join(tmp, LAYER_META), "x") as f:
                    json.dump(meta, f, indent=1, sort_keys=True)
                final = self.layer_dir(layer.diff_id)
                os.makedirs(os.path.dirname(final), mode=0o755, exist_ok=True)
                os.rename(tmp, final)
            except BaseException:
                rmtree(tmp)
                raise
            os.chmod(final, 0o555)  # the layer's top: fs and layer.json stay as they are
            return stats

    def _apply(self, image: Image, layer: Layer, fs: str) -> Stats:
        fd = os.open(fs, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        applier = Applier(fd, "layer", privileged=os.geteuid() == 0, limits=self.limits)
        applier.begin(layer.digest)
        try:
            with image.open_layer(layer) as tf:
                stats = applier.apply(tf)
            applier.finish()
            return stats
        finally:
            applier.close()
            os.close(fd)

    # ------------------------------------------------------------ records, gc
    def _record(self, image: Image) -> None:
        _alg, hexpart = parse_digest(image.id)
        rec = {
            "id": image.id,
            "path": os.path.abspath(image.path),
            "tag": image.tag,
            "diff_ids": [layer.diff_id for layer in image.layers],
            "added": time.time(),
        }
        path = os.path.join(self.path, "images", f"{hexpart}.json")
        tmp = f"{path}.{os.getpid()}.{id(rec)}.tmp"
        with open(tmp, "w") as f:
            json.dump(rec, f, indent=1, sort_keys=True)
        os.replace(tmp, path)

    def images(self) -> list[ImageRecord]:
        """The images recorded in the store, oldest first."""
        out = []
        d = os.path.join(self.path, "images")
        if not os.path.isdir(d):
            return []
        for name in sorted(os.listdir(d)):
            if not name.endswith(".json"):
                continue
            try:
                with open(os.path.join(d, name)) as f:
                    rec = json.load(f)
                out.append(
                    ImageRecord(
                        id=str(rec["id"]),
                        path=str(rec["path"]),
                        tag=rec.get("tag"),
                        diff_ids=tuple(rec["diff_ids"]),
                        added=float(rec["added"]),
                    )
                )
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise ImageError(f"store {self.path}: image record {name} is damaged ({e})") from e
        return sorted(out, key=lambda r: r.added)

    def layers(self) -> list[str]:
        """The diff_ids of the complete layers in the store."""
        out = []
        top = os.path.join(self.path, "layers")
        if not os.path.isdir(top):
            return []
        for alg in sorted(os.listdir(top)):
            for hexpart in sorted(os.listdir(os.path.join(top, alg))):
                if self.has_layer(f"{alg}:{hexpart}"):
                    out.append(f"{alg}:{hexpart}")
        return out

    def forget(self, image_id: str) -> bool:
        """Drop the record of image ``image_id`` (its layers go at the next :meth:`gc`)."""
        _alg, hexpart = parse_digest(image_id)
        try:
            os.unlink(os.path.join(self.path, "images", f"{hexpart}.json"))
        except FileNotFoundError:
            return False
        return True

    def gc(self, keep: Sequence[str] = ()) -> list[str]:
        """Remove the layers no recorded image uses (and unpacks left by a crash).

        Args:
            keep: diff_ids to keep anyway.

        Returns:
            the diff_ids removed.

        A layer under a running sandbox's overlay must not be removed: forget
        an image only once no sandbox runs from it.
        """
        if not os.path.isdir(self.path):
            return []
        self._setup()
        removed = []
        with self._lock("store.lock", fcntl.LOCK_EX):
            used = set(keep)
            for rec in self.images():
                used.update(rec.diff_ids)
            for diff_id in self.layers():
                if diff_id not in used:
                    d = self.layer_dir(diff_id)
                    os.chmod(d, 0o755)
                    rmtree(d)
                    removed.append(diff_id)
            # unpacks in progress hold the store's lock shared: none now
            tmp = os.path.join(self.path, "tmp")
            for name in os.listdir(tmp):
                rmtree(os.path.join(tmp, name))
        return removed

    def disk_usage(self) -> int:
        """Bytes of the store's layers (the blocks of their files, each inode counted once)."""
        seen: set[tuple[int, int]] = set()
        total = 0
        for top, dirs, files in os.walk(os.path.join(self.path, "layers")):
            for name in dirs + files:
                st = os.lstat(os.path.join(top, name))
                if (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_blocks * 512
        return total
