"""User and group id maps: planned before the clone, written for a waiting child."""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence

from nscg._spawn._caller import _CAP_SETGID, _CAP_SETUID, which
from nscg.container import (
    Container,
)
from nscg.errors import (
    SpawnError,
    SpecError,
    UnsupportedError,
)
from nscg.namespaces import IdMap, in_initial_userns, root_range
from nscg.process import Stage


# ---------------------------------------------------------------- id maps
def _map_text(maps: Sequence[IdMap]) -> str:
    return "".join(m.line() for m in maps)


def _single_self_map(maps: Sequence[IdMap], own: int) -> bool:
    return len(maps) == 1 and maps[0].count == 1 and maps[0].outside == own


def _plan_maps(
    c: Container, cap_eff: int
) -> tuple[tuple[IdMap, ...], tuple[IdMap, ...], str, str, bool]:
    """Return (uid_map, gid_map, uid tool, gid tool, deny_setgroups).

    A tool is "write" (the parent writes /proc/PID/*_map) or the path of
    newuidmap/newgidmap.
    """
    euid, egid = os.geteuid(), os.getegid()
    uid_in = c.user if c.user is not None else 0
    gid_in = c.group if c.group is not None else 0
    uid_map = c.uid_map or (IdMap(uid_in, euid, 1),)
    gid_map = c.gid_map or (IdMap(gid_in, egid, 1),)
    if (c.uid_map is None or c.gid_map is None) and euid == 0 and in_initial_userns():
        # root is not host root: ids 0..65535 go to an unprivileged host range
        uid_map, gid_map = _root_caller_maps(c, uid_map, gid_map)
    tools = []
    deny = False
    for maps, own, cap, helper in (
        (uid_map, euid, _CAP_SETUID, "newuidmap"),
        (gid_map, egid, _CAP_SETGID, "newgidmap"),
    ):
        has_cap = bool(cap_eff >> cap & 1)
        if has_cap or _single_self_map(maps, own):
            tools.append("write")
            if helper == "newgidmap" and not has_cap:
                deny = True
            continue
        found = which(helper)
        if not found:
            raise UnsupportedError(
                f"mapping {_map_text(maps).strip()!r} needs {helper}(1) (package uidmap) and "
                f"an entry in /etc/sub{'u' if helper == 'newuidmap' else 'g'}id, or root; "
                f"without them an unprivileged caller can map only its own id",
                feature=helper,
            )
        tools.append(found)
    return uid_map, gid_map, tools[0], tools[1], deny


def _root_caller_maps(
    c: Container, uid_map: tuple[IdMap, ...], gid_map: tuple[IdMap, ...]
) -> tuple[tuple[IdMap, ...], tuple[IdMap, ...]]:
    """A root caller's default maps: inside 0..65535 to :func:`root_range` (per map not given)."""
    rr = root_range()
    if c.uid_map is None:
        uid_map = rr.uid_map()
    if c.gid_map is None:
        gid_map = rr.gid_map()
    for what, ident, maps in (
        ("user", c.user, uid_map),
        ("group", c.group, gid_map),
    ):
        if ident is not None and not any(m.contains_inside(ident) for m in maps):
            raise SpecError(
                f"{what} {ident} is outside the default map of a root caller's sandbox "
                f"(ids 0..{rr.count - 1}); give a {what[0]}id map that maps it"
            )
    for g in c.groups or ():
        if not any(m.contains_inside(g) for m in gid_map):
            raise SpecError(f"supplementary group {g} is not mapped by the gid map {gid_map}")
    return uid_map, gid_map


def _root_elsewhere(uid_map: Sequence[IdMap], gid_map: Sequence[IdMap]) -> bool:
    """Whether the maps give inside uid and gid 0 to other host ids than the caller's."""
    u = next((m.outside for m in uid_map if m.contains_inside(0)), None)
    g = next((m.outside for m in gid_map if m.contains_inside(0)), None)
    return u is not None and g is not None and (u != os.geteuid() or g != os.getegid())


def _write_maps(
    pid: int, uid_map: Sequence[IdMap], gid_map: Sequence[IdMap], utool: str, gtool: str, deny: bool
) -> None:
    def write(path: str, text: str) -> None:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, text.encode())
            finally:
                os.close(fd)
        except OSError as e:
            raise SpawnError(e.errno or 0, "write", Stage.ID_MAPS, -1, path) from None

    def helper(tool: str, maps: Sequence[IdMap], path: str) -> None:
        import subprocess

        args = [tool, str(pid)]
        for m in maps:
            args += [str(m.inside), str(m.outside), str(m.count)]
        r = subprocess.run(args, capture_output=True, check=False)
        if r.returncode:
            raise SpawnError(
                errno.EPERM,
                os.path.basename(tool),
                Stage.ID_MAPS,
                -1,
                path,
                detail=r.stderr.decode(errors="replace").strip(),
            )

    if utool == "write":
        write(f"/proc/{pid}/uid_map", _map_text(uid_map))
    else:
        helper(utool, uid_map, f"/proc/{pid}/uid_map")
    if deny:
        write(f"/proc/{pid}/setgroups", "deny")
    if gtool == "write":
        write(f"/proc/{pid}/gid_map", _map_text(gid_map))
    else:
        helper(gtool, gid_map, f"/proc/{pid}/gid_map")
