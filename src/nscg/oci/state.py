"""The state directory of ``nscg-oci``: one directory per container under ``--root``.

``ROOT/ID/state.json`` holds what ``state`` prints (runtime-spec "State")
and the container process's start time (``/proc/PID/stat`` field 22), so a
recycled pid is never taken for the container. The status is computed when
read: ``running`` while that process lives, else ``stopped``.

Only the standard library is imported here: ``state``, ``list`` and
``delete`` start without nscg's spawn machinery.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from typing import Any, Final

__all__ = [
    "ID_RE",
    "CommandFailed",
    "ContainerState",
    "default_root",
    "list_ids",
    "process_start_time",
]

#: container ids runc accepts
ID_RE: Final = re.compile(r"[\w+\-.]+")


class CommandFailed(Exception):
    """An ``nscg-oci`` command failed: the message runc would log, and the exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def default_root(rootless: bool) -> str:
    """``/run/nscg-oci``, or ``$XDG_RUNTIME_DIR/nscg-oci`` for an unprivileged caller."""
    if not rootless:
        return "/run/nscg-oci"
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    return os.path.join(xdg, "nscg-oci") if xdg else f"/tmp/nscg-oci-{os.geteuid()}"


def process_start_time(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after the last ')'
    fields = stat[stat.rindex(b")") + 2 :].split()
    state, start = fields[0], int(fields[19])
    return None if state in (b"Z", b"X") else start


def list_ids(root: str) -> list[str]:
    """The ids of the containers under ``root`` (sorted)."""
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if os.path.isfile(os.path.join(root, n, "state.json")))


class ContainerState:
    """One container's directory: its ``state.json`` read, written and removed."""

    def __init__(self, root: str, cid: str) -> None:
        self.root = root
        self.id = cid
        self.dir = os.path.join(root, cid)
        self.file = os.path.join(self.dir, "state.json")

    def create_dir(self) -> bool:
        """Make the container's directory; False if it exists (the id is taken)."""
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        try:
            os.mkdir(self.dir, 0o700)
        except FileExistsError:
            return False
        return True

    def write(self, data: dict[str, Any]) -> None:
        """Replace ``state.json`` atomically."""
        tmp = self.file + ".tmp"
        with open(tmp, "w") as f:
            json.dump(data, f)
        os.rename(tmp, self.file)

    def read(self) -> dict[str, Any] | None:
        """The stored state with its ``status`` (and ``pid`` 0 once stopped), or None."""
        try:
            with open(self.file) as f:
                data: dict[str, Any] = json.load(f)
        except (FileNotFoundError, NotADirectoryError):
            return None
        start = data.pop("_start", None)
        pid = data.get("pid", 0)
        alive = bool(pid) and start is not None and process_start_time(pid) == start
        data["status"] = "running" if alive else "stopped"
        if not alive:
            data["pid"] = 0
        return data

    def running_pid(self) -> tuple[int, int] | None:
        """(pid, start time) of the container's process while it runs, else None."""
        try:
            with open(self.file) as f:
                data = json.load(f)
        except (FileNotFoundError, NotADirectoryError):
            return None
        pid, start = data.get("pid", 0), data.get("_start")
        if pid and start is not None and process_start_time(pid) == start:
            return pid, start
        return None

    def remove(self) -> None:
        """Remove the container's directory (a missing one is fine)."""
        shutil.rmtree(self.dir, ignore_errors=True)
