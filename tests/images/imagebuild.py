"""Test images built with real tools (umoci, skopeo), FROM scratch, offline.

The files come from a static busybox and from layers written here with
Python's ``tarfile`` and added verbatim by ``umoci raw add-layer`` (the only
way to get every case of the OCI spec into one image: opaque markers, a file
replaced by a directory, hard links broken by a later layer, device nodes).
``umoci`` writes the manifests and configs; ``skopeo`` converts the layout to
every archive form and compression.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

TOOLS = ("umoci", "skopeo")
BUSYBOX_APPLETS = ("sh", "ls", "cat", "id", "echo", "env", "pwd", "stat", "rm", "touch", "true")
TAG = "t"


def missing_tools() -> list[str]:
    """The image tools that are not installed."""
    return [t for t in TOOLS if shutil.which(t) is None]


def run(*argv: str) -> None:
    """Run a tool; its output in the error when it fails."""
    r = subprocess.run(argv, capture_output=True, check=False)
    if r.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed:\n{r.stdout.decode()}\n{r.stderr.decode()}")


class LayerTar:
    """A layer tar written with tarfile (PAX, with xattrs)."""

    def __init__(self, mtime: int = 1_600_000_000) -> None:
        self.buf = io.BytesIO()
        self.tf = tarfile.open(fileobj=self.buf, mode="w", format=tarfile.PAX_FORMAT)  # noqa: SIM115
        self.mtime = mtime

    def _info(
        self, name: str, kind: bytes, mode: int, uid: int = 0, gid: int = 0
    ) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(name)
        ti.type = kind
        ti.mode = mode
        ti.uid, ti.gid = uid, gid
        ti.mtime = self.mtime
        return ti

    def dir(self, name: str, mode: int = 0o755, **kw: int) -> LayerTar:
        self.tf.addfile(self._info(name, tarfile.DIRTYPE, mode, **kw))
        return self

    def file(
        self,
        name: str,
        data: bytes = b"",
        mode: int = 0o644,
        xattrs: dict[str, bytes] | None = None,
        **kw: int,
    ) -> LayerTar:
        ti = self._info(name, tarfile.REGTYPE, mode, **kw)
        ti.size = len(data)
        if xattrs:
            ti.pax_headers = {
                f"SCHILY.xattr.{k}": v.decode("utf-8", "surrogateescape") for k, v in xattrs.items()
            }
        self.tf.addfile(ti, io.BytesIO(data))
        return self

    def symlink(self, name: str, target: str) -> LayerTar:
        ti = self._info(name, tarfile.SYMTYPE, 0o777)
        ti.linkname = target
        self.tf.addfile(ti)
        return self

    def hardlink(self, name: str, target: str) -> LayerTar:
        ti = self._info(name, tarfile.LNKTYPE, 0o644)
        ti.linkname = target
        self.tf.addfile(ti)
        return self

    def fifo(self, name: str) -> LayerTar:
        self.tf.addfile(self._info(name, tarfile.FIFOTYPE, 0o640))
        return self

    def chardev(self, name: str, major: int, minor: int) -> LayerTar:
        ti = self._info(name, tarfile.CHRTYPE, 0o666)
        ti.devmajor, ti.devminor = major, minor
        self.tf.addfile(ti)
        return self

    def whiteout(self, name: str) -> LayerTar:
        d, _, base = name.rpartition("/")
        return self.file(f"{d}/.wh.{base}" if d else f".wh.{base}")

    def opaque(self, dirname: str) -> LayerTar:
        return self.file(f"{dirname}/.wh..wh..opq")

    def bytes(self) -> bytes:
        self.tf.close()
        return self.buf.getvalue()

    def write(self, path: Path) -> Path:
        path.write_bytes(self.bytes())
        return path


def base_layer(busybox: str) -> LayerTar:
    """busybox and its applets, /etc/passwd and /etc/group, and every entry type."""
    t = LayerTar()
    t.dir("bin").dir("etc").dir("tmp", 0o1777).dir("proc", 0o555).dir("dev").dir("home")
    t.file("bin/busybox", Path(busybox).read_bytes(), 0o755)
    for applet in BUSYBOX_APPLETS:
        t.symlink(f"bin/{applet}", "busybox")
    t.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001:app:/home/app:/bin/sh\n")
    t.file("etc/group", b"root:x:0:\napp:x:1001:\nextra:x:1002:app\n")
    t.file("etc/hosts", b"127.0.0.1 localhost\n")
    t.dir("home/app", 0o750, uid=1000, gid=1001)
    t.file("home/app/owned", b"mine\n", 0o600, uid=1000, gid=1001)
    t.dir("a").dir("a/b").file("a/b/c", b"c\n").file("a/keep", b"keep\n")
    t.dir("del").file("del/me", b"delete me\n").file("del/stay", b"stay\n")
    t.dir("opq").file("opq/x", b"x\n").dir("opq/sub").file("opq/sub/y", b"y\n")
    t.file("f2d", b"a file, later a directory\n")
    t.dir("d2s").file("d2s/inner", b"inner\n")
    t.dir("hl").file("hl/a", b"linked\n").hardlink("hl/b", "hl/a").hardlink("hl/c", "hl/a")
    t.file("suid", b"#!/bin/sh\n", 0o4755).file("sgid", b"", 0o2755).dir("sticky", 0o1777)
    t.file("xattr", b"x", xattrs={"user.test": b"hello", "user.bin": b"\x00\xff\x01"})
    # security.capability v2: cap_net_bind_service (bit 10) permitted+effective
    cap = bytes.fromhex("0100000200040000000000000000000000000000")
    t.file("capfile", b"", 0o755, xattrs={"security.capability": cap})
    t.fifo("fifo")
    t.chardev("dev/null-ish", 1, 3)
    t.file("deep/ly/nested/file", b"no parent entries\n")
    return t


def second_layer() -> LayerTar:
    """Deletions, an opaque directory, type changes, a broken hard link."""
    t = LayerTar(mtime=1_600_000_100)
    t.whiteout("del/me")
    t.opaque("opq").file("opq/new", b"new\n")
    t.whiteout("f2d").dir("f2d").file("f2d/now", b"a directory now\n")
    t.whiteout("d2s").symlink("d2s", "a/b")
    t.whiteout("hl/b").file("hl/b", b"broken away\n")
    t.file("a/b/c", b"changed\n", 0o640)
    t.file("etc/added", b"added in layer 2\n")
    return t


def empty_layer() -> LayerTar:
    """A layer with no entries at all."""
    return LayerTar()


def build_layout(
    workdir: Path, busybox: str, *, extra: Callable[[LayerTar], None] | None = None
) -> Path:
    """An OCI layout ``workdir/layout`` with tag :data:`TAG`: base, second, empty layers.

    The config has Env, Entrypoint, Cmd, WorkingDir, User, a label, ExposedPorts
    and a StopSignal.
    """
    layout = workdir / "layout"
    ref = f"{layout}:{TAG}"
    run("umoci", "init", "--layout", str(layout))
    run("umoci", "new", "--image", ref)
    tars = [base_layer(busybox), second_layer(), empty_layer()]
    if extra is not None:
        extra(tars[1])
    for i, t in enumerate(tars):
        path = t.write(workdir / f"layer{i}.tar")
        run("umoci", "raw", "add-layer", "--image", ref, str(path))
        path.unlink()
    run(
        "umoci", "config", "--image", ref,
        "--config.env", "GREETING=hello image", "--config.env", "PATH=/bin",
        "--config.entrypoint", "/bin/sh", "--config.entrypoint", "-c",
        "--config.cmd", "echo $GREETING from $(pwd) as $(id -u):$(id -g)",
        "--config.workingdir", "/a", "--config.user", "app:extra",
        "--config.label", "org.example.test=yes", "--config.exposedports", "8080/tcp",
        "--config.stopsignal", "SIGINT",
    )  # fmt: skip
    run("umoci", "gc", "--layout", str(layout))
    return layout


def convert(layout: Path, dest: Path, form: str) -> str:
    """Copy the layout's image with skopeo into ``form``; returns the path to open.

    Forms: ``oci-zstd`` (an OCI layout, zstd layers), ``oci-plain`` (uncompressed
    layers: skopeo 1.9 keeps gzip in an OCI layout, so the blobs are decompressed
    here and the manifest and index rewritten), ``oci-archive`` (gzip),
    ``docker-archive`` (plain tar layers).
    """
    src = f"oci:{layout}:{TAG}"
    base = ["skopeo", "--insecure-policy", "copy", "-q"]
    if form == "oci-zstd":
        run(*base, "--dest-compress-format", "zstd", src, f"oci:{dest}:{TAG}")
    elif form == "oci-plain":
        decompress_layout(layout, dest)
    elif form == "oci-archive":
        run(*base, src, f"oci-archive:{dest}:{TAG}")
    elif form == "docker-archive":
        run(*base, src, f"docker-archive:{dest}:example/test:{TAG}")
    else:
        raise ValueError(form)
    return str(dest)


def decompress_layout(layout: Path, dest: Path) -> None:
    """A copy of the OCI layout whose layers are plain tars (media type ``...tar``)."""
    shutil.copytree(layout, dest)
    blobs = dest / "blobs" / "sha256"

    def put(data: bytes) -> tuple[str, int]:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return f"sha256:{digest}", len(data)

    index = json.loads((dest / "index.json").read_text())
    for desc in index["manifests"]:
        manifest = json.loads((blobs / desc["digest"].split(":")[1]).read_bytes())
        for layer in manifest["layers"]:
            data = gzip.decompress((blobs / layer["digest"].split(":")[1]).read_bytes())
            layer["digest"], layer["size"] = put(data)
            layer["mediaType"] = "application/vnd.oci.image.layer.v1.tar"
        desc["digest"], desc["size"] = put(json.dumps(manifest).encode())
    (dest / "index.json").write_text(json.dumps(index))


def umoci_unpack(layout: Path, bundle: Path) -> Path:
    """``umoci unpack`` (the oracle); returns the rootfs."""
    argv = ["umoci", "unpack", "--image", f"{layout}:{TAG}", str(bundle)]
    if os.geteuid() != 0:
        argv.insert(2, "--rootless")
    run(*argv)
    return bundle / "rootfs"
