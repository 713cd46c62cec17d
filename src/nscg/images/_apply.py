"""Applying a layer's tar stream to a directory, as the OCI image spec says, safely.

A layer is untrusted input (docs/images.md, "Threat model"). Every entry is
written relative to an fd of the directory being filled, one path component at
a time, each opened with ``O_DIRECTORY | O_NOFOLLOW``: a symlink is never
followed while unpacking, whoever planted it (an earlier entry of the same
layer, or a lower layer when flattening). Entry names with ``..``, paths
through a symlink or a non-directory, hard links to anything not already
inside the directory, whiteouts of ``.`` or ``..`` raise :class:`LayerError`;
the caller then throws the whole directory away.

Two modes:

- ``layer`` (the store): one fresh directory per layer, in the form overlayfs
  reads as a lower layer: a whiteout ``.wh.NAME`` becomes a character device
  0/0 named NAME, an opaque marker ``.wh..wh..opq`` the xattr
  ``user.overlay.opaque=y`` on its directory (the form an overlay mounted with
  ``userxattr`` in a user namespace reads, as nscg mounts it) and, for root,
  ``trusted.overlay.opaque=y`` as well (the form an overlay mounted in the
  initial user namespace reads).
- ``flatten`` (:meth:`Image.unpack`): every layer in turn into one
  directory; a whiteout deletes what the layers below had, an opaque marker
  empties the directory of what the layers below had (what this layer wrote
  stays: the spec's rule).

Directory modes and mtimes are applied at the end (:meth:`Applier.finish`),
deepest first: a directory of mode 0555 can still be filled by an
unprivileged caller, and writing into a directory does not undo its mtime.
"""

from __future__ import annotations

import errno
import os
import stat
import tarfile
from collections.abc import Iterable
from typing import IO, Literal

import attrs

from nscg.images.errors import LayerError

__all__ = ["Applier", "UnpackLimits", "Stats"]

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTRS_ROOT = ("trusted.overlay.opaque", "user.overlay.opaque")
OPAQUE_XATTRS_USER = ("user.overlay.opaque",)
#: xattr prefixes a layer may not set: they would steer overlayfs (fake
#: opaque directories, redirects, metacopy) instead of describing a file
RESERVED_XATTRS = ("trusted.overlay.", "user.overlay.")
_XATTR_PAX = "SCHILY.xattr."
#: where a rootless unpack records an owner it cannot set (rootlesscontainers.io)
ROOTLESS_XATTR = "user.rootlesscontainers"
_CHUNK = 1 << 20
_O_PATH_DIR = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CACHE_MAX = 256

Mode = Literal["layer", "flatten"]
Path = tuple[str, ...]


@attrs.frozen
class UnpackLimits:
    """Bounds on one layer's tar stream (a tar bomb fails fast, nothing is kept).

    Attributes:
        max_entries: tar entries per layer (default 1 000 000).
        max_bytes: bytes of file content per layer (default 64 GiB).
        max_path: bytes of an entry's name or link target (default 4096).
    """

    max_entries: int = 1_000_000
    max_bytes: int = 64 << 30
    max_path: int = 4096


@attrs.define
class Stats:
    """What applying a layer did.

    Attributes:
        entries: tar entries read.
        bytes: bytes of file content written.
        notes: what could not be kept, with counts (e.g. device nodes of a
            rootless unpack, owners other than root, xattrs of other namespaces).
    """

    entries: int = 0
    bytes: int = 0
    notes: dict[str, int] = attrs.field(factory=dict)

    def note(self, what: str) -> None:
        """Count one ``what``."""
        self.notes[what] = self.notes.get(what, 0) + 1


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def rootless_owner(uid: int, gid: int) -> bytes:
    """The ``user.rootlesscontainers`` value: protobuf ``Resource{uid = 1; gid = 2}``."""
    out = b""
    if uid:
        out += b"\x08" + _varint(uid)
    if gid:
        out += b"\x10" + _varint(gid)
    return out


def components(name: str, *, digest: str, limit: int) -> Path:
    """A tar entry's name as path components below the layer's root.

    Leading ``/`` and ``./`` are dropped (tar names are relative to the layer);
    ``..`` anywhere is refused.
    """
    if len(name.encode("utf-8", "surrogateescape")) > limit:
        raise LayerError(
            f"layer {digest}: entry name longer than {limit} bytes", digest=digest, entry=name[:200]
        )
    if "\0" in name:
        raise LayerError(f"layer {digest}: entry name with a NUL byte", digest=digest, entry=name)
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise LayerError(
            f"layer {digest}: entry {name!r} leaves the layer ('..')", digest=digest, entry=name
        )
    return parts


class Applier:
    """Writes tar entries below one directory fd (see the module's docstring).

    Args:
        root_fd: an fd of the directory to fill (owned by the caller).
        mode: ``"layer"`` or ``"flatten"``.
        privileged: whether owners, device nodes, ``trusted.*`` and
            ``security.*`` xattrs can be written (the caller is root).
        limits: the bounds of one layer.
    """

    def __init__(self, root_fd: int, mode: Mode, *, privileged: bool, limits: UnpackLimits) -> None:
        self.root_fd = root_fd
        self.mode: Mode = mode
        self.privileged = privileged
        self.limits = limits
        self.digest = ""
        self.stats = Stats()
        self._dirs: dict[Path, int] = {}
        #: directory -> (mode, mtime ns), applied by finish()
        self._dir_meta: dict[Path, tuple[int, int]] = {}
        #: paths this layer wrote (flatten: whiteouts spare them)
        self._seen: set[Path] = set()
        #: what we create is root's: 0:0 needs no chown (layer mode: every
        #: directory is ours, made without a setgid bit until finish())
        self._made_as_root = mode == "layer" and os.geteuid() == 0 and os.getegid() == 0

    # ------------------------------------------------------------ lifecycle
    def begin(self, digest: str) -> None:
        """Start the next layer (flatten: after the previous one)."""
        self.digest = digest
        self.stats = Stats()
        self._seen = set()

    def apply(self, tf: tarfile.TarFile) -> Stats:
        """Apply every entry of ``tf`` (a stream opened with ``r|``)."""
        for m in tf:
            self.stats.entries += 1
            if self.stats.entries > self.limits.max_entries:
                raise self._error(
                    f"more than {self.limits.max_entries} entries (the store's max_entries)",
                    m.name,
                )
            self.entry(m, tf)
        return self.stats

    def finish(self) -> None:
        """Apply the deferred directory modes and mtimes, deepest first; close the fds."""
        try:
            for path in sorted(self._dir_meta, key=len, reverse=True):
                mode, mtime = self._dir_meta[path]
                try:
                    fd = self._open_dir_rw(path)
                except (FileNotFoundError, NotADirectoryError, LayerError):
                    continue  # removed or replaced later on
                try:
                    os.fchmod(fd, mode)
                    os.utime(fd, ns=(mtime, mtime))
                finally:
                    os.close(fd)
            self._dir_meta.clear()
        finally:
            self.close()

    def close(self) -> None:
        """Close the cached directory fds (idempotent)."""
        for fd in self._dirs.values():
            os.close(fd)
        self._dirs.clear()

    # ------------------------------------------------------------ helpers
    def _error(self, what: str, entry: str) -> LayerError:
        return LayerError(f"layer {self.digest}: entry {entry!r}: {what}", digest=self.digest,
                          entry=entry)  # fmt: skip

    def _dir(self, path: Path, *, create: bool, entry: str) -> int:
        """An O_PATH fd of directory ``path`` (cached), walked without following symlinks."""
        cur = self.root_fd
        for i in range(len(path)):
            key = path[: i + 1]
            cached = self._dirs.get(key)
            if cached is not None:
                cur = cached
                continue
            name = path[i]
            try:
                fd = os.open(name, _O_PATH_DIR, dir_fd=cur)
            except FileNotFoundError:
                if not create:
                    raise self._error(
                        f"'{'/'.join(key)}' does not exist in the layer", entry
                    ) from None
                os.mkdir(name, 0o755, dir_fd=cur)
                fd = os.open(name, _O_PATH_DIR, dir_fd=cur)
            except (NotADirectoryError, OSError) as e:
                if isinstance(e, NotADirectoryError) or e.errno == errno.ELOOP:
                    raise self._error(
                        f"'{'/'.join(key)}' is a symlink or not a directory: "
                        "a path through it is refused",
                        entry,
                    ) from None
                raise
            if len(self._dirs) >= _CACHE_MAX:
                self.close()
                return self._dir_uncached(path, fd, i, entry)
            self._dirs[key] = fd
            cur = fd
        return cur

    def _dir_uncached(self, path: Path, fd: int, i: int, entry: str) -> int:
        """The rest of ``_dir`` after the cache was emptied: fd is path[:i+1]'s."""
        self._dirs[path[: i + 1]] = fd
        return self._dir(path, create=True, entry=entry)

    def _open_dir_rw(self, path: Path) -> int:
        """A readable fd of directory ``path`` (for fchmod, fchown, fsetxattr)."""
        if not path:
            return os.open(".", _O_DIR, dir_fd=self.root_fd)
        parent = self._dir(path[:-1], create=False, entry="/".join(path))
        return os.open(path[-1], _O_DIR, dir_fd=parent)

    def _drop_cache(self, path: Path) -> None:
        n = len(path)
        for key in [k for k in self._dirs if k[:n] == path]:
            os.close(self._dirs.pop(key))

    def _lstat(self, parent: int, name: str) -> os.stat_result | None:
        try:
            return os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def _remove(self, parent: int, name: str, path: Path, st: os.stat_result) -> None:
        """Remove ``name`` (any type; a directory with everything in it)."""
        if stat.S_ISDIR(st.st_mode):
            self._drop_cache(path)
            _rmtree_at(parent, name)
        else:
            os.unlink(name, dir_fd=parent)

    def _clear(self, parent: int, name: str, path: Path, *, keep_dir: bool) -> bool:
        """Make room for a new entry ``name``; True if a directory stays (keep_dir)."""
        st = self._lstat(parent, name)
        if st is None:
            return False
        if keep_dir and stat.S_ISDIR(st.st_mode):
            return True
        self._remove(parent, name, path, st)
        return False

    def _xattrs(self, m: tarfile.TarInfo) -> list[tuple[str, bytes]]:
        out = []
        for key, value in m.pax_headers.items():
            if not key.startswith(_XATTR_PAX):
                continue
            name = key[len(_XATTR_PAX) :]
            if name.startswith(RESERVED_XATTRS):
                self.stats.note(f"reserved xattr {name} dropped")
                continue
            if not self.privileged and not name.startswith("user."):
                self.stats.note(f"xattr {name.split('.', 1)[0]}.* not kept (rootless)")
                continue
            out.append((name, value.encode("utf-8", "surrogateescape")))
        return out

    def _set_xattrs(self, target: int | str, xattrs: Iterable[tuple[str, bytes]]) -> None:
        for name, value in xattrs:
            try:
                if isinstance(target, int):
                    os.setxattr(target, name, value)
                else:
                    os.setxattr(target, name, value, follow_symlinks=False)
            except OSError as e:
                if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP):
                    raise
                self.stats.note(f"xattr {name} not kept ({errno.errorcode[e.errno]})")

    def _owner(self, m: tarfile.TarInfo) -> tuple[int, int] | None:
        """The owner to set, or None (rootless: every file is the caller's; root's own
        files in a fresh layer directory, whose directories have no setgid bit yet)."""
        if self.privileged:
            if self._made_as_root and not (m.uid or m.gid):
                return None
            return m.uid, m.gid
        if m.uid or m.gid:
            self.stats.note("owners other than root not kept (rootless)")
        return None

    def _rootless_owner(self, target: int | str, m: tarfile.TarInfo) -> None:
        """Rootless: a non-root owner recorded as ``user.rootlesscontainers`` (as umoci does)."""
        if self.privileged or not (m.uid or m.gid):
            return
        self._set_xattrs(target, [(ROOTLESS_XATTR, rootless_owner(m.uid, m.gid))])

    # ------------------------------------------------------------ entries
    def entry(self, m: tarfile.TarInfo, tf: tarfile.TarFile) -> None:
        """Apply one tar entry."""
        path = components(m.name, digest=self.digest, limit=self.limits.max_path)
        if not path:  # the layer's root itself
            if m.isdir():
                self._meta_dir((), m)
            return
        base = path[-1]
        if base.startswith(WHITEOUT_PREFIX):
            self._whiteout(path, m)
            return
        parent = self._dir(path[:-1], create=True, entry=m.name)
        if self.mode == "flatten":
            self._seen.add(path)
        if m.isdir():
            self._directory(parent, base, path, m)
        elif m.isreg():
            self._file(parent, base, path, m, tf)
        elif m.issym():
            self._symlink(parent, base, path, m)
        elif m.islnk():
            self._hardlink(parent, base, path, m)
        elif m.isfifo() or m.ischr() or m.isblk():
            self._special(parent, base, path, m)
        else:
            self.stats.note(f"entries of tar type {m.type!r} skipped")

    def _directory(self, parent: int, base: str, path: Path, m: tarfile.TarInfo) -> None:
        try:
            os.mkdir(base, 0o700, dir_fd=parent)
        except FileExistsError:  # kept if a directory (merged), else replaced
            if not self._clear(parent, base, path, keep_dir=True):
                os.mkdir(base, 0o700, dir_fd=parent)
        self._meta_dir(path, m)

    def _symlink(self, parent: int, base: str, path: Path, m: tarfile.TarInfo) -> None:
        if len(m.linkname.encode("utf-8", "surrogateescape")) > self.limits.max_path:
            raise self._error("symlink target too long", m.name)
        try:
            os.symlink(m.linkname, base, dir_fd=parent)
        except FileExistsError:
            self._clear(parent, base, path, keep_dir=False)
            os.symlink(m.linkname, base, dir_fd=parent)
        self._meta_other(parent, base, m)

    def _meta_dir(self, path: Path, m: tarfile.TarInfo) -> None:
        owner = self._owner(m)
        xattrs = self._xattrs(m)
        if owner is not None or xattrs or m.uid or m.gid:
            fd = self._open_dir_rw(path)
            try:
                if owner is not None:
                    os.fchown(fd, *owner)
                self._rootless_owner(fd, m)
                self._set_xattrs(fd, xattrs)
            finally:
                os.close(fd)
        self._dir_meta[path] = (m.mode & 0o7777, int(m.mtime * 1e9))

    def _file(
        self, parent: int, base: str, path: Path, m: tarfile.TarInfo, tf: tarfile.TarFile
    ) -> None:
        self.stats.bytes += m.size
        if self.stats.bytes > self.limits.max_bytes:
            raise self._error(
                f"more than {self.limits.max_bytes} bytes of content (the store's max_bytes)",
                m.name,
            )
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(base, flags, 0o600, dir_fd=parent)
        except FileExistsError:  # an entry of the same name earlier on: replaced
            self._clear(parent, base, path, keep_dir=False)
            fd = os.open(base, flags, 0o600, dir_fd=parent)
        try:
            src = tf.extractfile(m)
            if src is not None:
                _copy(src, fd, m.size)
            owner = self._owner(m)
            if owner is not None:
                os.fchown(fd, *owner)
            self._rootless_owner(fd, m)
            os.fchmod(fd, m.mode & 0o7777)  # after chown, which clears setuid
            self._set_xattrs(fd, self._xattrs(m))
            ns = int(m.mtime * 1e9)
            os.utime(fd, ns=(ns, ns))
        finally:
            os.close(fd)

    def _meta_other(self, parent: int, base: str, m: tarfile.TarInfo) -> None:
        """Owner and mtime of a symlink, FIFO or device (never followed)."""
        owner = self._owner(m)
        if owner is not None:
            os.chown(base, *owner, dir_fd=parent, follow_symlinks=False)
        ns = int(m.mtime * 1e9)
        os.utime(base, ns=(ns, ns), dir_fd=parent, follow_symlinks=False)

    def _hardlink(self, parent: int, base: str, path: Path, m: tarfile.TarInfo) -> None:
        target = components(m.linkname, digest=self.digest, limit=self.limits.max_path)
        if not target:
            raise self._error("hard link to the layer's root", m.name)
        if target == path:
            return  # a link to itself: nothing to do
        try:
            tparent = self._dir(target[:-1], create=False, entry=m.name)
            st = self._lstat(tparent, target[-1])
        except LayerError:
            st = None
        if st is None or stat.S_ISDIR(st.st_mode):
            raise self._error(
                f"hard link to {m.linkname!r}, which is not a file already in the "
                + ("layer" if self.mode == "layer" else "image"),
                m.name,
            )
        self._clear(parent, base, path, keep_dir=False)
        # the target's parent may be the same directory: its fd stays valid
        os.link(target[-1], base, src_dir_fd=tparent, dst_dir_fd=parent, follow_symlinks=False)

    def _special(self, parent: int, base: str, path: Path, m: tarfile.TarInfo) -> None:
        if not m.isfifo() and not self.privileged:
            self.stats.note("device nodes skipped (rootless)")
            return
        self._clear(parent, base, path, keep_dir=False)
        if m.isfifo():
            os.mkfifo(base, 0o600, dir_fd=parent)
        else:
            kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK
            os.mknod(base, kind | 0o600, os.makedev(m.devmajor, m.devminor), dir_fd=parent)
        self._meta_other(parent, base, m)
        os.chmod(base, m.mode & 0o7777, dir_fd=parent)  # a FIFO or device we just made

    def _whiteout(self, path: Path, m: tarfile.TarInfo) -> None:
        base = path[-1]
        dirpath = path[:-1]
        if base == OPAQUE_MARKER:
            parent = self._dir(dirpath, create=True, entry=m.name)
            if self.mode == "layer":
                fd = os.open(".", _O_DIR, dir_fd=parent)
                try:
                    names = OPAQUE_XATTRS_ROOT if self.privileged else OPAQUE_XATTRS_USER
                    for name in names:
                        os.setxattr(fd, name, b"y")
                finally:
                    os.close(fd)
                return
            for name in os.listdir(_fd_path(parent)):
                child = (*dirpath, name)
                st = self._lstat(parent, name)
                if child not in self._seen and st is not None:
                    self._remove(parent, name, child, st)
            return
        name = base[len(WHITEOUT_PREFIX) :]
        if name in ("", ".", "..") or name.startswith(WHITEOUT_PREFIX):
            raise self._error(f"whiteout of {name!r} is refused", m.name)
        parent = self._dir(dirpath, create=True, entry=m.name)
        target = (*dirpath, name)
        if self.mode == "layer":
            self._clear(parent, name, target, keep_dir=False)
            os.mknod(name, stat.S_IFCHR | 0o600, os.makedev(0, 0), dir_fd=parent)
            return
        st = self._lstat(parent, name)
        if st is not None and target not in self._seen:
            self._remove(parent, name, target, st)


def _fd_path(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


def _copy(src: IO[bytes], fd: int, size: int) -> None:
    left = size
    while left > 0:
        chunk = src.read(min(_CHUNK, left))
        if not chunk:
            raise tarfile.ReadError("unexpected end of data")
        left -= len(chunk)
        view = memoryview(chunk)
        while view:
            n = os.write(fd, view)
            view = view[n:]


def _rmtree_at(parent: int, name: str) -> None:
    """Remove directory ``name`` of ``parent`` and everything in it, never following a symlink.

    Iterative; an unreadable or unwritable directory (a rootless layer's 0555)
    is made accessible first (it is the caller's own).
    """
    stack: list[tuple[int, str, int | None]] = [(parent, name, None)]
    opened: list[int] = []
    try:
        while stack:
            pfd, dname, fd = stack[-1]
            if fd is None:
                try:
                    fd = os.open(dname, _O_DIR, dir_fd=pfd)
                except PermissionError:
                    os.chmod(_fd_path(_open_path(pfd, dname, opened)), 0o700)
                    fd = os.open(dname, _O_DIR, dir_fd=pfd)
                opened.append(fd)
                stack[-1] = (pfd, dname, fd)
                with os.scandir(fd) as it:
                    entries = list(it)
                if entries:
                    os.fchmod(fd, 0o700)
                pushed = False
                for e in entries:
                    if e.is_dir(follow_symlinks=False):
                        stack.append((fd, e.name, None))
                        pushed = True
                    else:
                        os.unlink(e.name, dir_fd=fd)
                if pushed:
                    continue
            stack.pop()
            os.close(fd)
            opened.remove(fd)
            os.rmdir(dname, dir_fd=pfd)
    finally:
        for fd in opened:
            os.close(fd)


def _open_path(parent: int, name: str, opened: list[int]) -> int:
    fd = os.open(name, _O_PATH_DIR, dir_fd=parent)
    opened.append(fd)
    return fd


def rmtree(path: str) -> None:
    """Remove a directory tree of the store (see :func:`_rmtree_at`)."""
    parent, name = os.path.split(os.path.abspath(path))
    pfd = os.open(parent, _O_DIR)
    try:
        _rmtree_at(pfd, name)
    finally:
        os.close(pfd)
