"""Images: first unpack vs umoci, start from an unpacked image vs RootFS.host(), disk reuse.

    python benchmarks/bench_images.py [-n 3] [--starts 60] [--json FILE] [--workdir DIR]

The image (about 100 MB in four gzip layers: a static busybox, the host's
/usr/lib/python3.X, /usr/share/perl and /usr/lib/x86_64-linux-gnu/perl, or
what of them exists) is built once with ``umoci raw add-layer`` and kept in
``--workdir``. Printed, each case interleaved with its peer in one run:

- first unpack: ``umoci unpack`` vs nscg's ``Store.ensure`` (a fresh store,
  layers in parallel) vs ``Image.unpack`` (the flattened tree), seconds;
- start: ``/bin/true`` in a sandbox of the unpacked image vs of RootFS.host()
  and of an overlay of one lower (the share of any overlay root), milliseconds
  (medians of interleaved rounds);
- disk: bytes the store grows by for a second image that shares all layers
  but one small one.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import nscg
from nscg.images import Image, Store
from nscg.images._apply import rmtree

TREES = ("usr/share/perl", "usr/lib/x86_64-linux-gnu/perl")


def _run(*argv: str) -> None:
    r = subprocess.run(argv, capture_output=True, check=False)
    if r.returncode:
        raise SystemExit(f"{' '.join(argv)} failed: {r.stderr.decode()}")


def _python_tree() -> str:
    return f"usr/lib/python3.{sys.version_info.minor}"


def build(workdir: Path) -> Path:
    """The benchmark image (built once: reused when ``workdir/layout`` exists)."""
    layout = workdir / "layout"
    if (layout / "index.json").exists():
        return layout
    busybox = shutil.which("busybox") or "/bin/busybox"
    ref = f"{layout}:bench"
    _run("umoci", "init", "--layout", str(layout))
    _run("umoci", "new", "--image", ref)
    base = workdir / "base.tar"
    with tarfile.open(base, "w") as tf:
        for d in ("bin", "proc", "dev", "tmp", "etc"):
            ti = tarfile.TarInfo(d)
            ti.type, ti.mode = tarfile.DIRTYPE, 0o755
            tf.addfile(ti)
        tf.add(busybox, "bin/busybox")
        for applet in ("true", "sh"):
            ti = tarfile.TarInfo(f"bin/{applet}")
            ti.type, ti.linkname = tarfile.SYMTYPE, "busybox"
            tf.addfile(ti)
    layers = [base]
    for i, tree in enumerate((_python_tree(), *TREES)):
        if not os.path.isdir("/" + tree):
            continue
        path = workdir / f"layer{i}.tar"
        _run("tar", "-C", "/", "--exclude=__pycache__", "-cf", str(path), tree)
        layers.append(path)
    for path in layers:
        _run("umoci", "raw", "add-layer", "--image", ref, str(path))
        path.unlink()
    return layout


def _blob_bytes(img: Image) -> int:
    return sum(layer.size for layer in img.layers)


def _timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def unpack_round(layout: Path, scratch: Path) -> dict[str, float]:
    """One interleaved round: umoci unpack, Store.ensure, Image.unpack (fresh each)."""
    img = Image.open(layout, "bench")
    out: dict[str, float] = {}
    for case in ("umoci", "nscg-store", "nscg-flatten"):
        dest = scratch / case
        os.sync()
        if case == "umoci":
            out[case] = _timed(
                functools.partial(_run, "umoci", "unpack", "--image", f"{layout}:bench", str(dest))
            )
        elif case == "nscg-store":
            out[case] = _timed(functools.partial(Store(dest).ensure, img))
        else:
            out[case] = _timed(functools.partial(img.unpack, dest))
        rmtree(str(dest))
    return out


def start_rounds(layout: Path, store: Store, n: int) -> dict[str, list[float]]:
    """Interleaved starts of /bin/true: the image's root vs the host's."""
    img = Image.open(layout, "bench")
    root = nscg.RootFS.image(img, store=store)
    bottom = root.overlays()[0].lowers[-1]
    cases = {
        "image": nscg.Container().with_rootfs(root),
        # the same overlay machinery with one lower: what the image adds to any overlay root
        "overlay-1-lower": nscg.Container().with_rootfs(nscg.RootFS.overlay([bottom])),
        "host": nscg.Container(),
    }
    times: dict[str, list[float]] = {k: [] for k in cases}
    for c in cases.values():  # warm up: prepared plans, page cache
        c.run(["/bin/true"])
    for i in range(n):
        for name in sorted(cases, reverse=bool(i % 2)):
            t = time.perf_counter()
            r = cases[name].run(["/bin/true"])
            times[name].append(time.perf_counter() - t)
            if r.returncode:
                raise SystemExit(f"{name}: /bin/true failed: {r}")
    return times


def disk_reuse(layout: Path, scratch: Path) -> dict[str, int]:
    """Bytes a second image sharing all layers but a new 1 MiB one adds to the store."""
    store = Store(scratch / "disk-store")
    first = Image.open(layout, "bench")
    store.ensure(first)
    one = store.disk_usage()
    second = scratch / "second"
    shutil.copytree(layout, second)
    extra = scratch / "extra.tar"
    with tarfile.open(extra, "w") as tf:
        data = os.urandom(1 << 20)
        ti = tarfile.TarInfo("extra")
        ti.size = len(data)
        tf.addfile(ti, _Bytes(data))
    _run("umoci", "raw", "add-layer", "--image", f"{second}:bench", str(extra))
    store.ensure(Image.open(second, "bench"))
    two = store.disk_usage()
    rmtree(str(scratch / "disk-store"))
    shutil.rmtree(second)
    return {"first_image": one, "both_images": two, "added_by_second": two - one}


class _Bytes:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def read(self, n: int = -1) -> bytes:
        end = len(self.data) if n < 0 else self.pos + n
        chunk = self.data[self.pos : end]
        self.pos += len(chunk)
        return chunk


def main() -> None:
    """Build (or reuse) the image, run the three measures, print and optionally save."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=3, help="unpack rounds")
    ap.add_argument("--starts", type=int, default=60, help="start rounds")
    ap.add_argument("--json", default=None)
    ap.add_argument("--workdir", default=None, help="where the image is built (kept)")
    args = ap.parse_args()
    if not shutil.which("umoci"):
        raise SystemExit("needs umoci (apt-get install umoci)")
    workdir = Path(args.workdir or os.path.join(tempfile.gettempdir(), "nscg-bench-images"))
    workdir.mkdir(parents=True, exist_ok=True)
    os.chmod(workdir, 0o755)
    layout = build(workdir)
    img = Image.open(layout, "bench")
    print(
        f"image: {len(img.layers)} layers, {_blob_bytes(img) / 1e6:.1f} MB of gzip blobs; "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    scratch = Path(tempfile.mkdtemp(prefix="nscg-bench-", dir="/var/tmp"))
    os.chmod(scratch, 0o755)
    doc: dict[str, object] = {"layers": len(img.layers), "blob_bytes": _blob_bytes(img)}
    try:
        rounds = [unpack_round(layout, scratch) for _ in range(args.n)]
        med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
        print(f"first unpack (median of {args.n}, s; ratio per round: min-max):")
        for k, v in med.items():
            ratios = [r[k] / r["umoci"] for r in rounds]
            print(
                f"  {k:14s} {v:7.3f}  ratio to umoci {v / med['umoci']:.2f} "
                f"({min(ratios):.2f}-{max(ratios):.2f})"
            )
        doc["unpack_s"] = med
        doc["unpack_rounds"] = rounds
        store = Store(scratch / "start-store")
        times = start_rounds(layout, store, args.starts)
        smed = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        print(f"start /bin/true (median of {args.starts}, ms):")
        for k, v in smed.items():
            print(f"  {k:16s} {v:7.2f}  ratio to host {v / smed['host']:.2f}")
        doc["start_ms"] = smed
        disk = disk_reuse(layout, scratch)
        print(
            f"disk: first image {disk['first_image'] / 1e6:.1f} MB, a second sharing all "
            f"layers but a 1 MiB one adds {disk['added_by_second'] / 1e6:.2f} MB"
        )
        doc["disk_bytes"] = disk
    finally:
        rmtree(str(scratch))
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
