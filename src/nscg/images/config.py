"""The typed image configuration (``application/vnd.oci.image.config.v1+json``).

Only what a runtime uses is typed; the Docker archive's config has the same
shape (``config`` with ``Env``, ``Cmd``, ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from nscg.images.errors import ImageFormatError

__all__ = ["HistoryEntry", "ImageConfig"]


@attrs.frozen
class HistoryEntry:
    """One entry of the image's history.

    Attributes:
        created_by: the command that made the layer (may be empty).
        created: its RFC 3339 timestamp, as written.
        comment: a free-form comment.
        empty_layer: True when this step made no layer.
    """

    created_by: str = ""
    created: str = ""
    comment: str = ""
    empty_layer: bool = False


def _strs(value: object, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ImageFormatError(f"image config: {what} must be a list of strings, got {value!r}")
    return tuple(value)


def _str(value: object, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ImageFormatError(f"image config: {what} must be a string, got {value!r}")
    return value


def _map(value: object, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ImageFormatError(f"image config: {what} must be an object, got {value!r}")
    return value


@attrs.frozen
class ImageConfig:
    """An image's configuration: what to run and how, and the layers' digests.

    Attributes:
        env: the environment, as ``(name, value)`` pairs in order.
        entrypoint: the program and its fixed arguments (may be empty).
        cmd: the default arguments (or program, without entrypoint).
        working_dir: the working directory ("" for ``/``).
        user: ``user``, ``uid``, ``user:group`` or ``uid:gid`` ("" for root),
            resolved in the image's own ``/etc/passwd`` and ``/etc/group``.
        exposed_ports: e.g. ``("80/tcp",)``.
        labels: the image's labels.
        stop_signal: e.g. ``"SIGTERM"`` ("" when not set).
        diff_ids: the digests of the layers' uncompressed tars, bottom first.
        history: the build history.
        architecture, os: the platform the image is for.
    """

    __module__ = "nscg.images"

    env: tuple[tuple[str, str], ...] = ()
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    working_dir: str = ""
    user: str = ""
    exposed_ports: tuple[str, ...] = ()
    labels: Mapping[str, str] = attrs.field(factory=dict, eq=False)
    stop_signal: str = ""
    diff_ids: tuple[str, ...] = ()
    history: tuple[HistoryEntry, ...] = ()
    architecture: str = ""
    os: str = ""

    @property
    def argv(self) -> tuple[str, ...]:
        """The default command: ``entrypoint + cmd``."""
        return (*self.entrypoint, *self.cmd)

    @classmethod
    def from_json(cls, doc: object) -> ImageConfig:
        """Parse an image config document (already decoded JSON).

        Raises:
            ImageFormatError: a field has the wrong type, or ``rootfs`` is not
                of type ``layers``.
        """
        top = _map(doc, "the document")
        conf = _map(top.get("config"), "config")
        env: list[tuple[str, str]] = []
        for item in _strs(conf.get("Env"), "Env"):
            name, sep, value = item.partition("=")
            if not name or not sep:
                raise ImageFormatError(f"image config: Env entry {item!r} is not NAME=value")
            env.append((name, value))
        rootfs = _map(top.get("rootfs"), "rootfs")
        if rootfs.get("type") != "layers":
            raise ImageFormatError(
                f"image config: rootfs.type must be 'layers', got {rootfs.get('type')!r}"
            )
        diff_ids = _strs(rootfs.get("diff_ids"), "rootfs.diff_ids")
        history = []
        for item in top.get("history") or ():
            h = _map(item, "history entry")
            history.append(
                HistoryEntry(
                    created_by=_str(h.get("created_by"), "history.created_by"),
                    created=_str(h.get("created"), "history.created"),
                    comment=_str(h.get("comment"), "history.comment"),
                    empty_layer=bool(h.get("empty_layer", False)),
                )
            )
        labels = _map(conf.get("Labels"), "Labels")
        return cls(
            env=tuple(env),
            entrypoint=_strs(conf.get("Entrypoint"), "Entrypoint"),
            cmd=_strs(conf.get("Cmd"), "Cmd"),
            working_dir=_str(conf.get("WorkingDir"), "WorkingDir"),
            user=_str(conf.get("User"), "User"),
            exposed_ports=tuple(sorted(_map(conf.get("ExposedPorts"), "ExposedPorts"))),
            labels={str(k): str(v) for k, v in labels.items()},
            stop_signal=_str(conf.get("StopSignal"), "StopSignal"),
            diff_ids=diff_ids,
            history=tuple(history),
            architecture=_str(top.get("architecture"), "architecture"),
            os=_str(top.get("os"), "os"),
        )
