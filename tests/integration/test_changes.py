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
from tests.conftest import child_pythonpath, need_nobody_python, need_root, static_busybox

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
    shutil.copy(static_busybox(), d / "bin/busybox")
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


def need_user_xattrs_on_tmpfs() -> None:
    """Skip before Linux 6.6: tmpfs has no user.* xattrs, so an overlay made inside a
    user namespace (userxattr) cannot mark a directory opaque: removing a directory
    of a lower fails with EIO (docs/rootfs.md, "Rootless")."""
    from nscg._host import kernel_version

    if kernel_version() < (6, 6):
        pytest.skip("tmpfs has user xattrs from Linux 6.6 on")


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
    static_busybox()  # (skips before anything is made)
    d = Path(tempfile.mkdtemp(prefix="nscg-lower-", dir="/var/tmp"))
    os.chmod(d, 0o755)
    make_lower(d)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def with_submount(lower: Path, code: str, *, nobody: bool = False) -> dict[str, object]:
    """Run Python ``code`` (it prints one JSON line last) in a private mount namespace
    where ``lower/mnt`` is a mount (as root, or as uid 65534): inside a user namespace
    the overlay root is then made of one overlay per top-level entry (the case that
    lost top-level writes). The host's mount table never changes."""
    import sys

    if nobody:
        need_nobody_python()
    drop = "setpriv --reuid=65534 --regid=65534 --clear-groups -- " if nobody else ""
    script = f'mount -t tmpfs -o size=1m t "{lower}/mnt" && exec {drop}"$0" -c "$1"'
    r = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script, sys.executable,
         dedent(code)],
        capture_output=True, timeout=120, check=False, cwd="/",
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/",
             "PYTHONPATH": child_pythonpath()},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr.decode()
    out: dict[str, object] = json.loads(r.stdout.decode().strip().splitlines()[-1])
    return out


def own(tree: Path) -> None:
    """Give the tree to a root caller's sandbox root, an unprivileged host range
    (docs/security.md): for a lower that keeps its host owners (idmap_lowers=False);
    an idmapped lower's root-owned files are the sandbox root's already."""
    rr = nscg.namespaces.root_range()
    for p in [tree, *tree.rglob("*")]:
        os.lchown(p, rr.uid, rr.gid)


SPLIT_RUN = """
import json, nscg
r = nscg.Container().with_rootfs(
    nscg.RootFS.overlay([LOWER], proc=False, dev=False, idmap_lowers=False)
).run(["/bin/sh", "-c", SCRIPT], capture_output=True)
ch = r.changes
print(json.dumps({"rc": r.returncode, "err": r.stderr.decode(),
                  "out": r.stdout.decode(), "truncated": ch.truncated,
                  "added": sorted(ch.added), "modified": sorted(ch.modified),
                  "deleted": sorted(ch.deleted)}))
"""


def _split(lower: Path, nobody: bool) -> tuple[dict[str, object], View]:
    code = SPLIT_RUN.replace("LOWER", repr(str(lower))).replace("SCRIPT", repr(CHANGES + LISTING))
    out = with_submount(lower, code, nobody=nobody)
    assert out["rc"] == 0, out["err"]
    assert not out["truncated"]
    return out, sandbox_view(str(out["out"]).encode())


def in_private_shm(
    code: str, timeout: float = 300, also: str = ""
) -> tuple[dict[str, object], list[str]]:
    """Run Python ``code`` (it prints one JSON line last) as root in a private mount
    namespace whose /dev/shm is a fresh tmpfs; return its JSON and what is left in that
    /dev/shm afterwards (other test runs on this host cannot disturb the check)."""
    need_root()
    import sys

    script = (
        "mount -t tmpfs -o size=64m shm /dev/shm && "
        + "".join(f"mount -t tmpfs -o size=64m t {d} && " for d in also.split())
        + '"$0" -c "$1" && echo "LEFT=$(ls -A1 /dev/shm | paste -sd/ -)"'
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
    if userns:
        need_user_xattrs_on_tmpfs()
    before = host_view(lower)
    c = Container() if userns else Container().without_namespaces("user")
    r, after = _run(c, RootFS.overlay([str(lower)], proc=False, dev=False))
    assert r.changes is not None
    assert got(r.changes) == expected(before, after)
    assert "/var/run/utmp" in r.changes.added  # not resolved through the host's /run
    assert host_view(lower) == before


def test_top_level_writes_are_reported_in_the_split_root(lower: Path) -> None:
    own(lower)  # (the split root keeps the lower's host owners: idmap_lowers=False)
    need_user_xattrs_on_tmpfs()
    before = host_view(lower)
    out, after = _split(lower, nobody=False)
    added, deleted = out["added"], out["deleted"]
    assert isinstance(added, list) and isinstance(deleted, list)
    assert {"/newfile", "/newdir", "/newdir/f", "/lnk2"} <= set(added)
    assert "/lnk" in deleted
    report = {k: out[k] for k in ("added", "modified", "deleted")}
    assert report == expected(before, after, mounts=frozenset({"/mnt"}))


@pytest.mark.rootless
def test_report_matches_find_rootless(lower: Path) -> None:
    need_user_xattrs_on_tmpfs()
    for p in [lower, *lower.rglob("*")]:
        os.lchown(p, 65534, 65534)
    before = host_view(lower)
    out, after = _split(lower, nobody=True)
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


def test_a_full_tmp_area_is_a_typed_error_or_not_needed(lower: Path) -> None:
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
            if upper is None:  # /dev/shm full too: the ephemeral upper is not there
                subprocess.run(["mount", "--bind", "/dev/shm/full", "/dev/shm"], check=True)
            try:
                r = nscg.Container().with_rootfs(
                    nscg.RootFS.overlay([{str(lower)!r}], upper, proc=False, dev=False)
                ).run(["/bin/sh", "-c", "echo x > /a/x"])
                res.append(f"ran {{r.returncode}} {{sorted(r.changes.added)}}")
            except nscg.SyscallError as e:
                res.append(f"{{type(e).__name__}} {{e.errno}} {{e}}")
            except OSError as e:
                res.append("bare " + repr(e))
        print(json.dumps({{"res": res}}))
        """)
    )
    res = out["res"]
    assert isinstance(res, list)
    # a persistent upper on a full filesystem: a typed error naming it
    assert res[0].startswith("SyscallError 28 ") and "/dev/shm/full/upper is full" in res[0]
    # the ephemeral upper is scratch memory of the sandbox's own: a full /dev/shm is no matter
    assert res[1] == "ran 0 ['/a/x']"


def test_a_full_scratch_is_enospc_inside_and_nothing_outside(lower: Path) -> None:
    c = Container().with_rootfs(
        RootFS.overlay([str(lower)], proc=False, dev=True, upper_size=1 << 20, shm_size=1 << 20)
    )
    script = (
        "busybox dd if=/dev/zero of=/a/big bs=64k count=64; "
        "busybox dd if=/dev/zero of=/dev/shm/big bs=64k count=64; "
        "busybox stat -c %s /a/big /dev/shm/big"
    )
    r = c.run(["/bin/sh", "-c", script], capture_output=True)
    err = (r.stderr or b"").decode()
    assert err.count("No space left on device") == 2, err
    sizes = [int(x) for x in (r.stdout or b"").split()]
    # (the upper's scratch memory also holds the pooled /dev: its 64 KiB join the limit)
    assert len(sizes) == 2 and 0 < sizes[0] <= (1 << 20) + (64 << 10) and 0 < sizes[1] <= 1 << 20, r
    assert r.changes is not None and "/a/big" in r.changes.added


def test_the_default_sizes() -> None:
    from nscg.rootfs import DEFAULT_SHM_SIZE, DEFAULT_TMP_SIZE, DEFAULT_UPPER_SIZE

    r = Container().run(["sh", "-c", "df -k /tmp /dev/shm | tail -2"], capture_output=True)
    sizes = [int(line.split()[1]) * 1024 for line in (r.stdout or b"").decode().splitlines()]
    assert sizes == [DEFAULT_TMP_SIZE, DEFAULT_SHM_SIZE], r
    r = (
        Container()
        .with_rootfs(RootFS.overlay())
        .run(["sh", "-c", "df -k / | tail -1"], capture_output=True)
    )
    size = int((r.stdout or b"").split()[1]) * 1024
    pool = _pooled_bytes(RootFS.overlay())
    assert DEFAULT_UPPER_SIZE + pool <= size <= DEFAULT_UPPER_SIZE + pool + (1 << 20), r


def _pooled_bytes(root: RootFS) -> int:
    """What the pooled mounts (/dev's own 64 KiB, /run, hidden homes) add to the
    scratch memory that holds an ephemeral upper (see Tmpfs.pooled)."""
    from nscg.rootfs import Dev, Tmpfs

    return sum(
        (op.size or 0)
        if isinstance(op, Tmpfs) and op.pooled
        else 64 << 10
        if isinstance(op, Dev)
        else 0
        for op in root.ops
    )


def test_sigkill_of_a_caller_with_50_live_overlay_sandboxes_leaves_nothing() -> None:
    token = f"nscg-kill-{os.getpid()}"
    victim = dedent(f"""
        import sys, nscg
        root = nscg.RootFS.overlay()
        script = "dd if=/dev/zero of=/big bs=1M count=4 2>/dev/null; sleep 600"
        ps = [nscg.Container().with_rootfs(root).spawn(["sh", "-c", script, {token!r}])
              for _ in range(50)]
        print("ready", flush=True)
        sys.stdin.read()
        """)
    out, left = in_private_shm(
        dedent(f"""
        import json, os, signal, subprocess, sys, time
        def mounts():
            with open("/proc/self/mountinfo") as f:
                return sorted(line.split()[4] for line in f)
        def alive():
            # the sandboxes' shells; not a shell's child forked for dd or sleep and not
            # exec'd yet (it has the shell's command line: 51 were counted once)
            shells = {{}}
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    with open(f"/proc/{{pid}}/cmdline", "rb") as f:
                        args = f.read().split(b"\\0")
                    with open(f"/proc/{{pid}}/stat", "rb") as f:
                        ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
                except (OSError, ValueError, IndexError):
                    continue
                if args[:2] == [b"sh", b"-c"] and args[3:4] == [{token!r}.encode()]:
                    shells[int(pid)] = ppid
            return sum(1 for ppid in shells.values() if ppid not in shells)
        def ours(d):
            return {{n for n in os.listdir(d) if n.startswith(("nscg-overlay-", "nscg-work-",
                                                               "nscg-etc-"))}}
        before, vartmp = mounts(), ours("/var/tmp")
        v = subprocess.Popen([sys.executable, "-c", {victim!r}], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE)
        assert v.stdout.readline() == b"ready\\n"
        live = alive()
        v.kill()
        v.wait()
        deadline = time.monotonic() + 30
        while alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        print(json.dumps({{"live": live, "after": alive(), "mounts": mounts() == before,
                          "tmp": os.listdir("/tmp"),
                          "vartmp": sorted(ours("/var/tmp") - vartmp)}}))
        """),
        also="/tmp",
    )
    assert out["live"] == 50, out
    assert out["after"] == 0 and out["mounts"], out
    assert out["tmp"] == [] and out["vartmp"] == [] and left == [], out


def test_cli_sizes() -> None:
    import sys

    def nscg(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "nscg", *args], capture_output=True, check=False
        )

    r = nscg(
        "run", "--tmp-size", "10M", "--shm-size", "5M", "--", "sh", "-c", "df -k /tmp /dev/shm"
    )
    sizes = [int(line.split()[1]) for line in r.stdout.decode().splitlines()[1:]]
    assert sizes == [10240, 5120], r
    r = nscg("run", "--root", "overlay", "--upper-size", "20M", "--", "sh", "-c", "df -k /")
    size = int(r.stdout.decode().splitlines()[1].split()[1])
    pool = _pooled_bytes(RootFS.overlay()) // 1024
    assert 20480 + pool <= size <= 20480 + pool + 1024, r
    r = nscg("run", "--upper-size", "20M", "--", "true")
    assert r.returncode == 2 and b"--upper-size needs an overlay root" in r.stderr


def test_a_scratch_memory_failure_is_typed_and_leaves_nothing(lower: Path) -> None:
    import errno

    from nscg import SpawnError, Stage
    from nscg._spawn import spawn

    c = Container().with_rootfs(RootFS.overlay([str(lower)], proc=False, dev=False))
    for index in (0, 1, 3):  # the tmpfs itself, a directory in it, the overlay made from it
        with pytest.raises(SpawnError) as ei:
            spawn(c, ["/bin/sh", "-c", "true"], _fault=(Stage.MOUNTS, errno.ENOMEM, index))
        assert ei.value.stage == Stage.MOUNTS and ei.value.errno == errno.ENOMEM
        assert "scratch tmpfs" in str(ei.value) or "overlay" in str(ei.value), ei.value
    # (the module's leak check: no fd, socket, process or mount left)
