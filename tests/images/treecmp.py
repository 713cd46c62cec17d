"""Entry-by-entry listing of a file tree, for comparing nscg's views with umoci's."""

from __future__ import annotations

import hashlib
import os
import stat
from typing import Any

#: xattrs that are not part of an image's content (overlayfs's own marks)
IGNORED_XATTRS = ("trusted.overlay.", "user.overlay.")


def listing(
    root: str, *, uid_shift: int = 0, gid_shift: int = 0, skip: tuple[str, ...] = ()
) -> dict[str, dict[str, Any]]:
    """path -> {type, mode, uid, gid, size, sha256, link, xattrs, links}; never follows symlinks.

    ``links`` is the sorted group of paths sharing the entry's inode (hard links).
    ``uid_shift``/``gid_shift`` are subtracted from owners (a sandbox's id range).
    Entries under ``skip`` (paths without the leading /) are left out.
    """
    out: dict[str, dict[str, Any]] = {}
    inodes: dict[tuple[int, int], list[str]] = {}
    stack = [""]
    while stack:
        rel = stack.pop()
        full = os.path.join(root, rel) if rel else root
        for name in sorted(os.listdir(full)):
            path = f"{rel}/{name}" if rel else name
            if path in skip:
                continue
            p = os.path.join(full, name)
            st = os.lstat(p)
            e: dict[str, Any] = {
                "type": stat.S_IFMT(st.st_mode),
                "mode": stat.S_IMODE(st.st_mode),
                "uid": st.st_uid - uid_shift,
                "gid": st.st_gid - gid_shift,
            }
            if stat.S_ISREG(st.st_mode):
                e["size"] = st.st_size
                with open(p, "rb") as f:
                    e["sha256"] = hashlib.sha256(f.read()).hexdigest()
                inodes.setdefault((st.st_dev, st.st_ino), []).append(path)
            elif stat.S_ISLNK(st.st_mode):
                e["link"] = os.readlink(p)
                del e["mode"]
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                e["rdev"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
            try:
                names = os.listxattr(p, follow_symlinks=False)
            except OSError:
                names = []
            e["xattrs"] = {
                n: _cap_v2(os.getxattr(p, n, follow_symlinks=False), n, uid_shift).hex()
                for n in sorted(names)
                if not n.startswith(IGNORED_XATTRS)
            }
            out[path] = e
            if stat.S_ISDIR(st.st_mode):
                stack.append(path)
    for group in inodes.values():
        for path in group:
            out[path]["links"] = sorted(group)
    return out


def _cap_v2(value: bytes, name: str, root: int) -> bytes:
    """A v3 file capability whose root is ``root`` (what host root reads through an
    idmapped mount) as the v2 form the sandbox's root reads."""
    if name != "security.capability" or len(value) != 24 or value[:4] != b"\x01\x00\x00\x03":
        return value
    if int.from_bytes(value[20:24], "little") != root:
        return value
    return b"\x01\x00\x00\x02" + value[4:20]


def diff(a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]]) -> list[str]:
    """Human-readable differences (empty when equal)."""
    out = []
    for path in sorted(a.keys() | b.keys()):
        if path not in a:
            out.append(f"only in the second: {path} {b[path]}")
        elif path not in b:
            out.append(f"only in the first: {path} {a[path]}")
        elif a[path] != b[path]:
            keys = sorted(
                k for k in a[path].keys() | b[path].keys() if a[path].get(k) != b[path].get(k)
            )
            out.append(
                f"{path}: "
                + ", ".join(f"{k} {a[path].get(k)!r} != {b[path].get(k)!r}" for k in keys)
            )
    return out
