"""The change report of overlay roots, checked against ground truth made with find(1).

The truth is computed independently of nscg's report: the "before" view is
find(1) run on the host over the lower directory; the "after" view is busybox
find + stat run by the payload itself, inside the sandbox, as its last step
(the merged view as the kernel shows it). Their difference is the expected
report: added = after - before, deleted = before - after (a removed directory
listed once), modified = in both with another type, mode or content.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from textwrap import dedent

import pytest

import nscg
from nscg import Container, RootFS, SpecError
from tests.conftest import need_root, run_as_nobody

SEP = "=====nscg-listing====="

# the payload: every kind of change, then the after-view of the whole root
CHANGES = r"""
set -e
echo new > /a/new
echo more >> /a/mod
chmod 600 /a/chm
rm /b/c/del
rm -r /b/gone
rm -r /b/opq && mkdir /b/opq && echo k > /b/opq/keep
mkdir -p /b/newdir/deeper && echo x > /b/newdir/deeper/f
mkfifo /a/fifo
echo sp > '/a/sp ace'
rm /var/run && mkdir /var/run && echo pid > /var/run/utmp && echo y > /var/run/nscg-x
ln -s a /lnk2
rm /lnk
echo top > /newfile
mkdir /newdir && echo z > /newdir/f
rm /a/todir && mkdir /a/todir && echo in > /a/todir/in
rm -r /a/tofile && echo now-a-file > /a/tofile
"""

LISTING = r"""
echo SEP
busybox find / | while IFS= read -r p; do
  [ "$p" = / ] && continue
  t=$(busybox stat -c %F "$p"); m=$(busybox stat -c %a "$p")
  case "$t" in
    "regular file"|"regular empty file") h=$(busybox md5sum < "$p" | busybox cut -d' ' -f1);;
    "symbolic link") h=$(busybox readlink "$p");;
    *) h=;;
  esac
  echo "$p|$t|$m|$h"
done
""".replace("SEP", SEP)

_TYPES = {
    "directory": "d",
    "regular file": "f",
    "regular empty file": "f",
    "symbolic link": "l",
    "fifo": "p",
    "character special file": "c",
    "block special file": "b",
    "socket": "s",
}

View = dict[str, tuple[str, str, str]]


def make_lower(d: Path, owner: int | None = None) -> None:
    """A small root: busybox, and something for every kind of change."""
    for sub in ("bin", "a/tofile/sub", "b/c", "b/gone/sub", "b/opq/sub", "run", "var", "mnt"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    shutil.copy("/bin/busybox", d / "bin/busybox")
    for tool in ("sh", "busybox"):
        if tool != "busybox":
            os.symlink("busybox", d / "bin" / tool)
    for rel, text in {
        "a/mod": "old",
        "a/chm": "c",
        "a/todir": "file",
        "a/tofile/sub/x": "x",
        "b/c/del": "x",
        "b/c/stay": "s",
        "b/gone/f": "x",
        "b/gone/sub/g": "g",
        "b/opq/o1": "1",
        "b/opq/sub/o2": "2",
        "run/stay": "r",
    }.items():
        (d / rel).write_text(text)
    os.symlink("/run", d / "var/run")  # absolute: the host's /run, never looked at
    os.symlink("a", d / "lnk")
    for p in [d, *d.rglob("*")]:
        if not p.is_symlink():
            os.chmod(p, 0o755 if p.is_dir() or p.name == "busybox" else 0o644)
        if owner is not None:
            os.lchown(p, owner, owner)


def host_view(lower: Path) -> View:
    """The lower as find(1) sees it on the host (never following a symlink)."""
    out = subprocess.run(
        ["find", str(lower), "-mindepth", "1", "-printf", r"%P\0%y\0%m\0"],
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    view: View = {}
    for i in range(0, len(out) - 1, 3):
        rel, typ, mode = out[i].decode(), out[i + 1].decode(), out[i + 2].decode()
        full = lower / rel
        if typ == "f":
            h = hashlib.md5(full.read_bytes()).hexdigest()
        elif typ == "l":
            h = os.readlink(full)
        else:
            h = ""
        view["/" + rel] = (typ, mode.lstrip("0") or "0", h)
    return view


def sandbox_view(stdout: bytes) -> View:
    text = stdout.decode().split(SEP, 1)[1]
    view: View = {}
    for line in text.strip().splitlines():
        p, t, m, h = line.split("|", 3)
        view[p] = (_TYPES[t], m, h)
    return view


def expected(
    before: View, after: View, mounts: frozenset[str] = frozenset()
) -> dict[str, list[str]]:
    added = {p for p in after if p not in before}
    gone = {p for p in before if p not in after}
    modified = {
        p
        for p in after
        if p in before
        and p not in mounts
        and (after[p][0] != before[p][0] or (after[p] != before[p]))
    }
    retyped = {p for p in modified if after[p][0] != before[p][0]}

    def under(p: str, tops: set[str]) -> bool:
        return any(p.startswith(t + "/") for t in tops)

    deleted = {p for p in gone if not under(p, gone) and not under(p, retyped)}
    return {"added": sorted(added), "modified": sorted(modified), "deleted": sorted(deleted)}


def got(ch: nscg.Changes) -> dict[str, list[str]]:
    assert not ch.truncated, ch.reason
    return {
        "added": sorted(ch.added),
        "modified": sorted(ch.modified),
        "deleted": sorted(ch.deleted),
    }


@pytest.fixture()
def lower() -> Iterator[Path]:
    need_root()
    d = Path(tempfile.mkdtemp(prefix="nscg-lower-", dir="/var/tmp"))
    os.chmod(d, 0o755)
    make_lower(d)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture()
def submount(lower: Path) -> Iterator[Path]:
    """The lower with a mount below it (/mnt): inside a user namespace the overlay root
    is then made of one overlay per top-level entry (the case that lost top-level writes)."""
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "t", str(lower / "mnt")], check=True)
    yield lower
    subprocess.run(["umount", str(lower / "mnt")], check=True)


def in_private_shm(code: str, timeout: float = 300) -> tuple[dict[str, object], list[str]]:
    """Run Python ``code`` (it prints one JSON line last) as root in a private mount
    namespace whose /dev/shm is a fresh tmpfs; return its JSON and what is left in that
    /dev/shm afterwards (other test runs on this host cannot disturb the check)."""
    need_root()
    import sys

    script = (
        "mount -t tmpfs -o size=64m shm /dev/shm && "
        '"$0" -c "$1" && echo "LEFT=$(ls -A1 /dev/shm | paste -sd/ -)"'
    )
    r = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script, sys.executable,
         code],
        capture_output=True, timeout=timeout, check=False, cwd=str(Path(__file__).parents[2]),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr.decode()
    lines = r.stdout.decode().strip().splitlines()
    assert len(lines) >= 2 and lines[-1].startswith("LEFT="), r.stdout
    left = lines[-1].removeprefix("LEFT=")
    return json.loads(lines[-2]), [n for n in left.split("/") if n]


REPORT = """
import json, nscg
ch = r.changes
print(json.dumps({"rc": r.returncode, "err": (r.stderr or b"").decode()[-500:],
                  "out": (r.stdout or b"").decode()[-200:], "truncated": ch.truncated,
                  "reason": ch.reason, "added": sorted(ch.added)}))
"""


def _run(c: Container, root: RootFS) -> tuple[nscg.Result, View]:
    r = c.with_rootfs(root).run(["/bin/sh", "-c", CHANGES + LISTING], capture_output=True)
    assert r.returncode == 0, r.stderr
    return r, sandbox_view(r.stdout or b"")


@pytest.mark.parametrize("userns", [False, True], ids=["no-userns", "userns"])
def test_report_matches_find_as_root(lower: Path, userns: bool) -> None:
    before = host_view(lower)
    c = Container() if userns else Container().without_namespaces("user")
    r, after = _run(c, RootFS.overlay([str(lower)], proc=False, dev=False))
    assert r.changes is not None
    assert got(r.changes) == expected(before, after)
    assert "/var/run/utmp" in r.changes.added  # not resolved through the host's /run
    assert host_view(lower) == before


def test_top_level_writes_are_reported_in_the_split_root(submount: Path) -> None:
    before = host_view(submount)
    r, after = _run(Container(), RootFS.overlay([str(submount)], proc=False, dev=False))
    assert r.changes is not None
    assert {"/newfile", "/newdir", "/newdir/f", "/lnk2"} <= r.changes.added
    assert "/lnk" in r.changes.deleted
    assert got(r.changes) == expected(before, after, mounts=frozenset({"/mnt"}))


@pytest.mark.rootless
def test_report_matches_find_rootless(submount: Path) -> None:
    for p in [submount, *submount.rglob("*")]:
        if not str(p).startswith(str(submount / "mnt")):
            os.lchown(p, 65534, 65534)
    os.chown(submount / "mnt", 65534, 65534)
    before = host_view(submount)
    out = run_as_nobody(
        f"""
        import json, nscg
        r = nscg.Container().with_rootfs(
            nscg.RootFS.overlay([{str(submount)!r}], proc=False, dev=False)
        ).run(["/bin/sh", "-c", {CHANGES + LISTING!r}], capture_output=True)
        ch = r.changes
        print(json.dumps({{"rc": r.returncode, "err": r.stderr.decode(),
                          "out": r.stdout.decode(), "truncated": ch.truncated,
                          "added": sorted(ch.added), "modified": sorted(ch.modified),
                          "deleted": sorted(ch.deleted)}}))
        """
    )
    assert out["rc"] == 0, out["err"]
    assert not out["truncated"]
    after = sandbox_view(out["out"].encode())
    report = {k: out[k] for k in ("added", "modified", "deleted")}
    assert report == expected(before, after, mounts=frozenset({"/mnt"}))


def test_persistent_upper_report_matches_find_and_a_missing_upper_is_made(lower: Path) -> None:
    with tempfile.TemporaryDirectory(dir="/dev/shm") as d:
        upper = Path(d) / "not" / "yet"
        root = RootFS.overlay([str(lower)], str(upper), proc=False, dev=False)
        before = host_view(lower)
        r, after = _run(Container().without_namespaces("user"), root)
        assert r.changes is not None
        assert got(r.changes) == expected(before, after)
        assert (upper / "newfile").read_text() == "top\n"
        assert [p.name for p in Path(d).iterdir()] == ["not"]  # no work dir left


def test_an_upper_inside_a_lower_is_refused(lower: Path) -> None:
    with pytest.raises(SpecError, match="inside the lower layer"):
        RootFS.overlay([str(lower)], str(lower / "up"))
    with pytest.raises(SpecError, match="inside the lower layer"):
        RootFS.overlay(["/"], "/var/tmp/nscg-up-in-root")
    assert not (lower / "up").exists()
    # another filesystem below the lower is not part of the layer
    RootFS.overlay(["/"], "/dev/shm/nscg-up-elsewhere")


@pytest.mark.parametrize("userns", [False, True], ids=["no-userns", "userns"])
def test_devices_fifos_and_sockets_in_the_upper(lower: Path, userns: bool) -> None:
    c = Container() if userns else Container().without_namespaces("user")
    c = c.with_capabilities("inherit")  # (CAP_MKNOD)
    script = "busybox mkfifo /a/p && busybox mknod /a/null c 1 3; busybox mknod /a/wh c 0 0; "
    script += "(busybox nc -lU /a/sock &); busybox sleep 0.3; true"
    r = c.with_rootfs(RootFS.overlay([str(lower)], proc=False, dev=False)).run(
        ["/bin/sh", "-c", script], capture_output=True
    )
    assert r.returncode == 0, r.stderr
    assert r.changes is not None and not r.changes.truncated
    assert "/a/p" in r.changes.added
    if not userns:  # (a user namespace may not make devices)
        assert "/a/null" in r.changes.added
    # a 0/0 device is a whiteout to overlayfs: of nothing that was there
    assert "/a/wh" not in r.changes.all()


def test_a_chain_deeper_than_path_max_is_reported_truncated_and_cleaned(lower: Path) -> None:
    # (built bottom-up with short names: a shell cannot cd deeper than PATH_MAX)
    script = "cd /a && mkdir d && i=1 && while [ $i -lt 5000 ]; do "
    script += "mkdir n && mv d n/d && mv n d && i=$((i+1)); done; echo ok"
    out, left = in_private_shm(
        dedent(f"""
        import nscg
        r = nscg.Container().with_rootfs(
            nscg.RootFS.overlay([{str(lower)!r}], proc=False, dev=False)
        ).run(["/bin/sh", "-c", {script!r}], capture_output=True, timeout=120)
        """)
        + REPORT
    )
    assert out["rc"] == 0 and out["out"] == "ok\n", out["err"]
    assert out["truncated"] and "longer than" in str(out["reason"])
    added = out["added"]
    assert isinstance(added, list) and added
    # what is listed is true: /a/d, /a/d/d, ... each one level deeper
    assert all(p.startswith("/a/d") and set(p[2:]) <= {"/", "d"} for p in added)
    assert max(len(p) for p in added) <= 4096
    assert left == []


@pytest.mark.slow
def test_many_files_are_bounded_and_cleaned(lower: Path) -> None:
    script = "mkdir /a/many && cd /a/many && busybox seq 1 250000 | busybox xargs touch; echo ok"
    out, left = in_private_shm(
        dedent(f"""
        import nscg
        r = nscg.Container().with_rootfs(
            nscg.RootFS.overlay([{str(lower)!r}], proc=False, dev=False)
        ).run(["/bin/sh", "-c", {script!r}], capture_output=True, timeout=300)
        """)
        + REPORT
    )
    assert out["rc"] == 0, out["err"]
    assert out["truncated"] and "entries" in str(out["reason"])
    assert isinstance(out["added"], list) and 0 < len(out["added"]) <= 200_000
    assert left == []


def test_the_report_is_json_serialisable_with_its_flag(lower: Path) -> None:
    r = (
        Container()
        .with_rootfs(RootFS.overlay([str(lower)], proc=False, dev=False))
        .run(["/bin/sh", "-c", "echo > /a/x"], capture_output=True)
    )
    assert r.changes is not None
    assert json.dumps(sorted(r.changes.added)) == '["/a/x"]'
    assert r.changes.truncated is False and r.changes.reason == ""
    assert stat.S_ISDIR(os.stat(lower / "a").st_mode)


def test_a_full_tmp_area_is_a_typed_error_naming_it(lower: Path) -> None:
    out, _left = in_private_shm(
        dedent(f"""
        import json, os, subprocess, nscg
        os.makedirs("/dev/shm/full")
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8k,nr_inodes=4", "f",
                        "/dev/shm/full"], check=True)
        i = 0
        while True:  # fill it
            try:
                open(f"/dev/shm/full/f{{i}}", "w").close()
                i += 1
            except OSError:
                break
        res = []
        for upper in ("/dev/shm/full/upper", None):
            if upper is None:  # the ephemeral upper's place, /dev/shm, full too
                subprocess.run(["mount", "--bind", "/dev/shm/full", "/dev/shm"], check=True)
            try:
                nscg.Container().with_rootfs(
                    nscg.RootFS.overlay([{str(lower)!r}], upper, proc=False, dev=False)
                ).run(["/bin/sh", "-c", "true"])
                res.append("ran")
            except nscg.SyscallError as e:
                res.append(f"{{type(e).__name__}} {{e.errno}} {{e}}")
            except OSError as e:
                res.append("bare " + repr(e))
        print(json.dumps({{"res": res}}))
        """)
    )
    res = out["res"]
    assert isinstance(res, list)
    for r in res:
        assert r.startswith("SyscallError 28 ") and "is full" in r, r
