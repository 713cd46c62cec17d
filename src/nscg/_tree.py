"""Walks over trees a payload wrote: iterative, fd-based, bounded.

A payload controls the content of an overlay upper (and of anything else it
could write): a directory chain deeper than any recursion limit or than
``PATH_MAX``, millions of entries, unreadable (mode 000) directories,
symlinks where a directory was a moment ago, FIFOs and devices. Every walk
here therefore:

- opens each directory relative to its parent's fd with
  ``O_DIRECTORY | O_NOFOLLOW``: a symlink is never followed, wherever it was
  planted and whenever it was swapped in;
- is iterative and holds O(1) fds per layer whatever the depth: a directory's
  fd is closed while its subdirectories are walked and opened again through
  ``..`` of the child, checked to be the same directory (device and inode);
- is bounded: at most :data:`MAX_ENTRIES` entries are looked at, at most
  :data:`MAX_PATH_BYTES` bytes of paths are reported and no path longer than
  :data:`MAX_PATH` is reported; past a bound the report says ``truncated``.

The change report follows overlayfs's own lookup rules (see
``Documentation/filesystems/overlayfs.rst``): a lower layer contributes to a
directory only if every component above it is a directory in that layer (a
lower symlink is never followed into, unlike the host's view of the same
path); a whiteout (a 0/0 character device) hides the name in the layers
below; an opaque directory hides the layers below it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable, Sequence

#: Entries (upper and lower) a change report looks at before it gives up (``truncated``).
MAX_ENTRIES = 200_000
#: Total bytes of reported paths before the report gives up (``truncated``).
MAX_PATH_BYTES = 32 << 20
#: Paths longer than this (as bytes) are not reported, nor is anything below them.
MAX_PATH = 4096

_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_O_PATH_DIR = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

#: The opaque-directory xattrs: ``trusted.`` for a mount made by host root,
#: ``user.`` for one made with ``userxattr`` inside a user namespace.
OPAQUE_TRUSTED = "trusted.overlay.opaque"
OPAQUE_USER = "user.overlay.opaque"


class _Changed(Exception):
    """A directory was replaced while it was being walked."""


def is_whiteout(st: os.stat_result) -> bool:
    """Whether ``st`` is an overlayfs whiteout (a character device 0/0)."""
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _lstat(dfd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _xattr(dfd: int, name: str, attr: str) -> bytes | None:
    """An xattr of ``name`` in the directory ``dfd``, never following a symlink."""
    try:
        return os.getxattr(f"/proc/self/fd/{dfd}/{name}", attr, follow_symlinks=False)
    except OSError:
        return None


def _fix_and_open(dfd: int, name: str) -> int:
    """Open a directory whose mode keeps us out (the payload's chmod 000): add u+rwx first.

    Only for trees that are ours to change (scratch, temp dirs). The chmod goes
    through an O_PATH fd of the very directory (no symlink can intervene).
    """
    p = os.open(name, _O_PATH_DIR, dir_fd=dfd)
    try:
        os.chmod(f"/proc/self/fd/{p}", stat.S_IMODE(os.fstat(p).st_mode) | 0o700)
    finally:
        os.close(p)
    return os.open(name, _O_DIR, dir_fd=dfd)


def _open_dir(dfd: int, name: str, fix_perms: bool) -> int:
    try:
        return os.open(name, _O_DIR, dir_fd=dfd)
    except PermissionError:
        if not fix_perms:
            raise
        return _fix_and_open(dfd, name)


def _ident(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


class _Frame:
    """One directory on the walk: its entries, and its fd in each layer."""

    __slots__ = ("fds", "hidden", "ids", "name", "names", "pos", "present", "rel")

    def __init__(self, rel: str, name: str, fds: list[int | None], hidden: bool) -> None:
        self.rel = rel
        self.name = name
        self.fds = fds
        self.present = [fd is not None for fd in fds]
        self.ids = [None if fd is None else _ident(fd) for fd in fds]
        self.hidden = hidden
        self.names: list[str] = []
        self.pos = 0


def _reopen_parent(child: _Frame, parent: _Frame) -> None:
    """Give ``parent`` back the fds it closed while ``child`` was walked (through ``..``)."""
    for k, fd in enumerate(parent.fds):
        if fd is not None or not parent.present[k]:
            continue
        cfd = child.fds[k]
        assert cfd is not None
        up = os.open("..", _O_DIR, dir_fd=cfd)
        if _ident(up) != parent.ids[k]:
            os.close(up)
            raise _Changed(parent.rel)
        parent.fds[k] = up


def _close(frames: list[_Frame]) -> None:
    for f in frames:
        for k, fd in enumerate(f.fds):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
                f.fds[k] = None


class Report:
    """The result of :func:`walk_changes` (sets of paths, and whether it stopped early)."""

    def __init__(self) -> None:
        self.added: set[str] = set()
        self.modified: set[str] = set()
        self.deleted: set[str] = set()
        self.truncated = False
        self.reason = ""
        self._entries = 0
        self._bytes = 0

    def stop(self, reason: str) -> None:
        """Mark the report as incomplete (the first reason is kept)."""
        if not self.truncated:
            self.truncated, self.reason = True, reason

    def count(self, n: int = 1) -> bool:
        """Account for ``n`` entries looked at; False once over the bound."""
        self._entries += n
        if self._entries > MAX_ENTRIES:
            self.stop(f"more than {MAX_ENTRIES} entries")
            return False
        return True

    def add(self, which: set[str], path: str) -> bool:
        """Report ``path``; False (and truncated) once over the bounds."""
        n = len(os.fsencode(path))
        if n > MAX_PATH:
            self.stop(f"a path longer than {MAX_PATH} bytes")
            return False
        self._bytes += n
        if self._bytes > MAX_PATH_BYTES:
            self.stop(f"more than {MAX_PATH_BYTES} bytes of paths")
            return False
        which.add(path)
        return True


def _names(fd: int, rep: Report) -> list[str] | None:
    """The sorted names in the directory ``fd``; None once over the bound."""
    out = []
    with os.scandir(fd) as it:
        for e in it:
            if not rep.count():
                return None
            out.append(e.name)
    out.sort()
    return out


def _lookup(
    frame: _Frame, name: str, opaque: Sequence[str]
) -> tuple[os.stat_result | None, list[bool]]:
    """What the merged lower layers had at ``name`` in ``frame`` (overlayfs's rules).

    Returns the topmost lower entry (None: absent or whited out) and, for a
    directory, which lower layers contribute to it.
    """
    found: os.stat_result | None = None
    sub = [False] * len(frame.fds)
    for k in range(1, len(frame.fds)):
        fd = frame.fds[k]
        if fd is None:
            continue
        st = _lstat(fd, name)
        if st is None:
            continue
        if is_whiteout(st):
            break
        if found is None:
            found = st
        if not stat.S_ISDIR(st.st_mode) or not stat.S_ISDIR(found.st_mode):
            break
        sub[k] = True
        if any(_xattr(fd, name, a) == b"y" for a in opaque):
            break
    return found, sub


#: how a lower's owner (uid, gid) shows in the upper after a copy-up
Owners = Callable[[int, int], tuple[int, int]]


def _kind(
    ust: os.stat_result, before: os.stat_result | None, rep: Report, owners: Owners | None = None
) -> set[str] | None:
    """Which set of ``rep`` an upper entry belongs to (None: an unchanged directory)."""
    if before is None:
        return rep.added
    if not (stat.S_ISDIR(ust.st_mode) and stat.S_ISDIR(before.st_mode)):
        return rep.modified
    ids = (before.st_uid, before.st_gid)
    if owners is not None:
        ids = owners(*ids)
    meta = (ust.st_mode, ust.st_uid, ust.st_gid)
    return rep.modified if meta != (before.st_mode, *ids) else None


def _lower_names(frame: _Frame, rep: Report) -> set[str] | None:
    """The names the merged lower layers had in ``frame`` (None: over the bound)."""
    seen: dict[str, bool] = {}
    for k in range(1, len(frame.fds)):
        fd = frame.fds[k]
        if fd is None:
            continue
        with os.scandir(fd) as it:
            for e in it:
                if not rep.count():
                    return None
                if e.name in seen:
                    continue
                white = False
                if not (e.is_dir(follow_symlinks=False) or e.is_file(follow_symlinks=False)):
                    st = _lstat(fd, e.name)
                    white = st is not None and is_whiteout(st)
                seen[e.name] = not white
    return {n for n, present in seen.items() if present}


def walk_changes(
    upper_fd: int,
    lower_fds: Sequence[int | None],
    base: str,
    rep: Report,
    *,
    opaque: Sequence[str] = (OPAQUE_TRUSTED, OPAQUE_USER),
    fix_perms: bool = False,
    skip_top: frozenset[str] = frozenset(),
    owners: Owners | None = None,
) -> None:
    """Add the changes an overlay upper (``upper_fd``) makes over ``lower_fds`` to ``rep``.

    The fds are borrowed (not closed). Paths are reported as ``base/rel``
    (``base`` without a trailing slash: "" for the root).

    Args:
        opaque: the xattrs that mark an opaque directory in these layers.
        fix_perms: make unreadable directories of the upper readable (only
            for trees that are nscg's own).
        skip_top: names at the top that are not compared (mount points).
        owners: how a lower directory's owner shows in the upper once copied
            up (idmapped lowers: their ids shifted to the sandbox's range);
            None: as it is.
    """
    fds: list[int | None] = [os.dup(upper_fd)]
    for fd in lower_fds:
        fds.append(None if fd is None else os.dup(fd))
    stack = [_Frame("", "", fds, False)]
    try:
        top = stack[0]
        assert top.fds[0] is not None
        names = _names(top.fds[0], rep)
        if names is None:
            return
        top.names = [n for n in names if n not in skip_top]
        while stack:
            fr = stack[-1]
            if fr.pos >= len(fr.names):
                if fr.hidden and not _deleted_under(fr, rep, base):
                    return
                stack.pop()
                if stack:
                    _reopen_parent(fr, stack[-1])
                _close([fr])
                continue
            name = fr.names[fr.pos]
            fr.pos += 1
            ufd = fr.fds[0]
            assert ufd is not None
            ust = _lstat(ufd, name)
            if ust is None:
                continue
            path = f"{base}/{fr.rel}{name}"
            before, sub = _lookup(fr, name, opaque)
            if is_whiteout(ust):
                if before is not None and not rep.add(rep.deleted, path):
                    return
                continue
            is_dir = stat.S_ISDIR(ust.st_mode)
            which = _kind(ust, before, rep, owners)
            if which is not None and not rep.add(which, path):
                return
            if not is_dir:
                continue
            # descend: the child's fds from ours; ours are closed meanwhile
            # where the child's ".." gives them back
            try:
                cfd = _open_dir(ufd, name, fix_perms)
            except OSError as e:
                rep.stop(f"cannot read {path}: {e.strerror}")
                continue
            child_fds: list[int | None] = [cfd]
            for k in range(1, len(fr.fds)):
                lfd = fr.fds[k]
                if not sub[k] or lfd is None:
                    child_fds.append(None)
                    continue
                try:
                    child_fds.append(os.open(name, _O_DIR, dir_fd=lfd))
                except OSError as e:
                    child_fds.append(None)
                    rep.stop(f"cannot read the lower layer of {path}: {e.strerror}")
            hidden = fr.hidden or any(_xattr(ufd, name, a) == b"y" for a in opaque)
            child = _Frame(f"{fr.rel}{name}/", name, child_fds, hidden)
            try:
                got = _names(cfd, rep)
            except OSError as e:
                rep.stop(f"cannot read {path}: {e.strerror}")
                _close([child])
                continue
            if got is None:
                _close([child])
                return
            child.names = got
            for k in range(len(fr.fds)):
                if child.fds[k] is not None and fr.fds[k] is not None:
                    os.close(fr.fds[k])  # type: ignore[arg-type]
                    fr.fds[k] = None
            stack.append(child)
    except _Changed as e:
        rep.stop(f"{base}/{e} was replaced during the walk")
    finally:
        _close(stack)


def _deleted_under(fr: _Frame, rep: Report, base: str) -> bool:
    """In a directory that hides the lower layers: what they had and the upper lacks."""
    names = _lower_names(fr, rep)
    if names is None:
        return False
    upper = set(fr.names)
    return all(rep.add(rep.deleted, f"{base}/{fr.rel}{n}") for n in sorted(names - upper))


# ---------------------------------------------------------------- removal
def rmtree_at(dfd: int, name: str) -> None:
    """Remove ``name`` (in the directory ``dfd``) and everything below it.

    Iterative, O(1) fds, never following a symlink; directories the payload
    made unwritable or unreadable are opened up first (the tree is nscg's own).
    Entries that vanish meanwhile are skipped; a directory replaced while it
    is being emptied raises OSError (ESTALE) instead of going elsewhere.
    """
    st = _lstat(dfd, name)
    if st is None:
        return
    if not stat.S_ISDIR(st.st_mode):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=dfd)
        return
    top = _open_writable(dfd, name)
    # the stack: (name in its parent, identity) of each directory below the top
    path: list[tuple[str, tuple[int, int]]] = []
    cur = top
    cur_id = _ident(cur)
    try:
        while True:
            sub = None
            seen = False
            with os.scandir(cur) as it:
                for e in it:
                    seen = True
                    if e.is_dir(follow_symlinks=False):
                        sub = e.name
                        break
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(e.name, dir_fd=cur)
            if seen and sub is None:
                continue  # look again: the directory must be seen empty
            if sub is not None:
                try:
                    nxt = _open_writable(cur, sub)
                except FileNotFoundError:
                    continue
                except OSError as err:
                    if err.errno in (errno.ELOOP, errno.ENOTDIR):  # swapped for a non-dir
                        continue
                    raise
                path.append((sub, cur_id))
                os.close(cur)
                cur, cur_id = nxt, _ident(nxt)
                continue
            if not path:
                break
            sub, parent_id = path.pop()
            up = os.open("..", _O_DIR, dir_fd=cur)
            os.close(cur)
            cur = up
            if _ident(up) != parent_id:
                raise OSError(errno.ESTALE, "a directory was moved while it was being removed", sub)
            cur_id = parent_id
            with contextlib.suppress(FileNotFoundError):
                os.rmdir(sub, dir_fd=cur)
    finally:
        os.close(cur)
    with contextlib.suppress(FileNotFoundError):
        os.rmdir(name, dir_fd=dfd)


def _open_writable(dfd: int, name: str) -> int:
    """Open a directory to empty it, adding u+rwx to its mode if that is needed."""
    fd = _open_dir(dfd, name, True)
    st = os.fstat(fd)
    if st.st_mode & 0o700 != 0o700 and os.geteuid() != 0:
        os.close(fd)
        return _fix_and_open(dfd, name)
    return fd


def rmtree(path: str) -> None:
    """:func:`rmtree_at` for a path (its parent directories are trusted)."""
    parent, name = os.path.split(path.rstrip("/"))
    try:
        dfd = os.open(parent or "/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        rmtree_at(dfd, name)
    finally:
        os.close(dfd)


__all__ = [
    "MAX_ENTRIES",
    "MAX_PATH",
    "MAX_PATH_BYTES",
    "OPAQUE_TRUSTED",
    "OPAQUE_USER",
    "Report",
    "is_whiteout",
    "rmtree",
    "rmtree_at",
    "top_changes",
    "walk_changes",
]


def top_changes(
    root_fd: int,
    before: dict[str, str | None],
    mounts: frozenset[str],
    base: str,
    rep: Report,
    *,
    fix_perms: bool = False,
) -> None:
    """The changes at the top of a root made of one mount per top-level entry.

    ``root_fd`` is the directory that was the sandbox's ``/`` (the mount
    points, the top-level symlinks and what the payload wrote there);
    ``before`` is the lower's top level when the plan was made (name: symlink
    target, or None for anything else); ``mounts`` are the names that were
    mount points (their content is reported by their own walks).
    """
    names = _names(root_fd, rep)
    if names is None:
        return
    for name in names:
        if name in mounts:
            continue
        st = _lstat(root_fd, name)
        if st is None:
            continue
        path = f"{base}/{name}"
        if name in before:
            target = before[name]
            if target is not None and stat.S_ISLNK(st.st_mode):
                with contextlib.suppress(OSError):
                    if os.readlink(name, dir_fd=root_fd) == target:
                        continue
            if not rep.add(rep.modified, path):
                return
        elif not rep.add(rep.added, path):
            return
        if stat.S_ISDIR(st.st_mode):
            try:
                fd = _open_dir(root_fd, name, fix_perms)
            except OSError as e:
                rep.stop(f"cannot read {path}: {e.strerror}")
                continue
            try:
                walk_changes(fd, [], path, rep, fix_perms=fix_perms)
            finally:
                os.close(fd)
            if rep.truncated:
                return
    present = set(names)
    for name in sorted(set(before) - present):
        if not rep.add(rep.deleted, f"{base}/{name}"):
            return
