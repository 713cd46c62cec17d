"""Running an image: its layers as overlay lowers, its config applied to a Container.

Reached through :meth:`nscg.RootFS.image` and :meth:`nscg.Container.from_image`.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence

import attrs

from nscg.container import Container
from nscg.errors import SpecError
from nscg.images.image import Image
from nscg.images.store import Store
from nscg.rootfs import (
    DEFAULT_SHM_SIZE,
    DEFAULT_TMP_SIZE,
    Dev,
    Op,
    Overlay,
    Proc,
    RootFS,
    Tmpfs,
)

__all__ = ["container_for", "image_rootfs", "read_merged", "resolve_user"]

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_MAX_IDS_FILE = 4 << 20


def _image(image: Image | str | os.PathLike[str]) -> Image:
    return image if isinstance(image, Image) else Image.open(image)


def image_rootfs(
    image: Image | str | os.PathLike[str],
    *,
    writable: bool = True,
    upper: str | os.PathLike[str] | None = None,
    store: Store | None = None,
    upper_size: int | None = None,
    tmp: bool = True,
    tmp_size: int | None = DEFAULT_TMP_SIZE,
    shm_size: int = DEFAULT_SHM_SIZE,
) -> RootFS:
    """See :meth:`nscg.RootFS.image`."""
    img = _image(image)
    lowers = (store or Store()).ensure(img)
    ops: list[Op] = [
        Overlay(tuple(reversed(lowers)), None if upper is None else os.fspath(upper),
                size=upper_size),
        Proc(),
        Dev(shm_size=shm_size),
    ]  # fmt: skip
    if tmp:
        ops.append(Tmpfs("/tmp", size=tmp_size, mode=0o1777))
    return RootFS(ops, readonly_root=not writable)


def read_merged(lowers: Sequence[str], path: str, limit: int = _MAX_IDS_FILE) -> bytes | None:
    """A regular file of the merged view of ``lowers`` (top first), as overlayfs finds it.

    Every component is opened relative to its parent without following
    symlinks; a whiteout or a non-directory hides the layers below, an opaque
    directory ends the lookup. None when the path is not a regular file.
    """
    parts = [p for p in path.split("/") if p]
    for lower in lowers:
        fd = os.open(lower, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            found, stop = _lookup(fd, parts, limit)
        finally:
            os.close(fd)
        if found is not None or stop:
            return found
    return None


def _lookup(top: int, parts: list[str], limit: int) -> tuple[bytes | None, bool]:
    """(content, whether the layers below are hidden) of ``parts`` in one layer."""
    fds: list[int] = []
    cur = top
    try:
        for i, name in enumerate(parts):
            try:
                st = os.stat(name, dir_fd=cur, follow_symlinks=False)
            except FileNotFoundError:
                return None, False
            last = i == len(parts) - 1
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                return None, True  # a whiteout
            if last:
                if not stat.S_ISREG(st.st_mode):
                    return None, True
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=cur)
                with os.fdopen(fd, "rb") as f:
                    return f.read(limit), True
            if not stat.S_ISDIR(st.st_mode):
                return None, True
            cur = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                          dir_fd=cur)  # fmt: skip
            fds.append(cur)
            try:
                opaque = os.getxattr(f"/proc/self/fd/{cur}", "user.overlay.opaque")
            except OSError:
                opaque = b""
            if opaque == b"y" and not last:
                # below an opaque directory only this layer counts
                content, _ = _lookup(cur, parts[i + 1 :], limit)
                return content, True
        return None, False
    finally:
        for fd in fds:
            os.close(fd)


def _entries(data: bytes | None) -> list[list[str]]:
    if data is None:
        return []
    return [line.split(":") for line in data.decode("utf-8", "replace").splitlines() if line]


@attrs.frozen
class ResolvedUser:
    """An image's ``User`` resolved in its own /etc/passwd and /etc/group."""

    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str | None


def resolve_user(user: str, lowers: Sequence[str]) -> ResolvedUser:
    """Resolve ``user`` (``name``, ``uid``, ``name:group``, ``uid:gid``) in the image's files.

    As Docker does: a numeric id needs no entry; a name must have one; without
    a group the user's primary group; supplementary groups are those of
    /etc/group naming the user.

    Raises:
        SpecError: a name the image's /etc/passwd or /etc/group does not have.
    """
    passwd = _entries(read_merged(lowers, "/etc/passwd"))
    group = _entries(read_merged(lowers, "/etc/group"))
    uname, _, gname = (user or "0").partition(":")
    entry = next(
        (e for e in passwd if len(e) >= 7 and (e[0] == uname or e[2] == uname)),
        None,
    )
    if uname.isdigit():
        uid = int(uname)
    elif entry is not None:
        uid = int(entry[2])
    else:
        raise SpecError(f"image user {uname!r} is not in the image's /etc/passwd")
    gid = int(entry[3]) if entry is not None and entry[3].isdigit() else 0
    if gname:
        if gname.isdigit():
            gid = int(gname)
        else:
            g = next((e for e in group if len(e) >= 3 and e[0] == gname), None)
            if g is None:
                raise SpecError(f"image group {gname!r} is not in the image's /etc/group")
            gid = int(g[2])
    name = entry[0] if entry is not None else None
    extra = sorted(
        {int(e[2]) for e in group
         if len(e) >= 4 and e[2].isdigit() and name and name in e[3].split(",")}
    )  # fmt: skip
    groups = tuple(dict.fromkeys([gid, *extra]))
    return ResolvedUser(uid, gid, groups, entry[5] if entry is not None else None)


def container_for(
    image: Image | str | os.PathLike[str],
    *,
    base: Container | None = None,
    writable: bool = True,
    upper: str | os.PathLike[str] | None = None,
    store: Store | None = None,
) -> Container:
    """See :meth:`nscg.Container.from_image`."""
    img = _image(image)
    st = store or Store()
    root = image_rootfs(img, writable=writable, upper=upper, store=st)
    lowers = tuple(reversed(st.ensure(img)))
    who = resolve_user(img.config.user, lowers)
    env = dict(img.config.env)
    env.setdefault("PATH", DEFAULT_PATH)
    if who.home:
        env.setdefault("HOME", who.home)
    env.setdefault("HOME", "/")
    c = (base or Container()).with_rootfs(root).with_env(env)
    c = c.with_cwd(img.config.working_dir or "/")
    if img.config.user:
        # rootless: one id is mapped and setgroups is denied; no supplementary groups
        groups = who.groups if os.geteuid() == 0 else None
        c = c.with_user(who.uid, who.gid, groups)
    if img.config.argv:
        c = attrs.evolve(c, command=img.config.argv)
    return c
