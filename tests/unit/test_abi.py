"""The C <-> Python boundary (abi.h) is one source, and stays exact.

Stage numbers, struct layouts and sizes are taken from abi.h through cffi,
never copied by hand; these tests keep the copies that must exist (the
Stage enum, the docs' table, the ABI version) in step with it.
"""

from __future__ import annotations

import hashlib
import re
import runpy
from pathlib import Path
from typing import Any

import pytest

import nscg
from nscg import _native
from nscg._native import ffi, lib
from nscg.errors import SpecError
from nscg.process import Stage

NATIVE = Path(nscg.__file__).parent / "_native"
DOCS = Path(__file__).resolve().parents[2] / "docs"

#: The layout of every struct and prototype of abi.h, by ABI version. A recorded
#: fingerprint never changes: a struct or a signature that changes needs
#: NSCG_ABI_VERSION bumped (abi.h and _native.EXPECTED_ABI) and a new entry.
LAYOUTS = {
    9: "8d433e5357fdf1a2",
    10: "5156803155ecc5ac",
    11: "e011770d940c24fe",
    12: "a5f3aac09d882366",
    13: "49ac773a0258191a",
    14: "7663b1f0094829c3",
    15: "f0b94438bf0716ea",
}


def _abi_text() -> str:
    return (NATIVE / "abi.h").read_text()


def _stages_in_abi() -> list[tuple[str, int]]:
    found = re.findall(r"^#define NSCG_STAGE_(\w+) (\d+)", _abi_text(), re.M)
    return [(name, int(value)) for name, value in found if name != "READY"]


def test_stages_are_numbered_in_stage_order() -> None:
    stages = _stages_in_abi()
    values = [v for _, v in stages]
    assert values == list(range(len(values))), "NSCG_STAGE_*: 0, 1, 2... in the order listed"


def test_stage_enum_follows_abi_h() -> None:
    assert [(m.name, m.value) for m in Stage] == _stages_in_abi()
    for name, value in _stages_in_abi():
        assert getattr(lib, f"NSCG_STAGE_{name}") == value


def test_docs_list_the_stages_in_order() -> None:
    text = (DOCS / "errors.md").read_text()
    table = text[text.index("The stages ({class}`nscg.Stage`)") :]
    table = table[: table.index("\n\n", table.index("| stage |"))]
    rows = re.findall(r"^\| `(\w+)` \|", table, re.M)
    assert rows == [m.name for m in Stage if m is not Stage.NONE]


def _structs() -> list[str]:
    return re.findall(r"^struct (nscg_\w+) \{", _abi_text(), re.M)


def test_structs_are_exact() -> None:
    """No padding the compiler adds silently: every byte of a struct is a field."""
    for name in _structs():
        t = ffi.typeof(f"struct {name}")
        end = 0
        for field, f in t.fields:
            assert f.offset == end, f"struct {name}: a hole before {field}"
            end = f.offset + ffi.sizeof(f.type)
        assert end == ffi.sizeof(t), f"struct {name}: padding at its end"


def _layout() -> str:
    parts: list[str] = []
    for name in _structs():
        t: Any = ffi.typeof(f"struct {name}")
        fields = ",".join(f"{n}:{f.offset}:{f.type.cname}" for n, f in t.fields)
        parts.append(f"{name}[{ffi.sizeof(t)}]{{{fields}}}")
    protos = re.findall(r"^\w[^;#/]*\bnscg_\w+\([^;]*\);", _abi_text(), re.M)
    parts.extend(" ".join(p.split()) for p in protos)
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def test_abi_version_is_bumped_with_the_layout() -> None:
    version = int(lib.NSCG_ABI_VERSION)
    assert version == _native.EXPECTED_ABI
    assert version in LAYOUTS, f"record ABI {version}'s layout here: {_layout()}"
    assert _layout() == LAYOUTS[version], (
        f"abi.h's structs or prototypes changed ({_layout()}) but NSCG_ABI_VERSION is still "
        f"{version}: bump it (abi.h and nscg._native.EXPECTED_ABI) and record the new layout"
    )


def test_child_error_record_is_read_with_the_declaration() -> None:
    from nscg import _spawn

    assert ffi.sizeof("struct nscg_child_error") == _spawn._REC_SIZE
    rec = ffi.new("struct nscg_child_error *")
    rec.abi, rec.stage, rec.err, rec.index = lib.NSCG_ABI_VERSION, Stage.MOUNTS, 2, 7
    rec.syscall = b"open_tree"
    raw = bytes(ffi.buffer(rec))
    assert _spawn._read_record(-1, raw) == (lib.NSCG_ABI_VERSION, Stage.MOUNTS, 2, 7, b"open_tree")


def test_the_source_hash_covers_every_c_file() -> None:
    """build.py and the import-time check hash the same files: every .c and .h."""
    build = runpy.run_path(str(NATIVE / "build.py"))
    names = sorted(p.name for p in NATIVE.iterdir() if p.suffix in (".c", ".h"))
    assert build["HASHED"] == names
    assert build["source_hash"]() == _native._source_hash(NATIVE)
    assert set(build["SOURCES"]) == {n for n in names if n.endswith(".c")} - {"init.c"}


def test_mount_destination_bound_comes_from_abi_h() -> None:
    from nscg import rootfs

    longest = "/" + ("d/" * lib.NSCG_MAX_DEST)[: lib.NSCG_MAX_DEST - 1] + "e"
    assert len(longest) - 1 == lib.NSCG_MAX_DEST  # the child's dest has no leading "/"
    assert rootfs._dest(longest) == longest
    with pytest.raises(SpecError, match="too long"):
        rootfs._dest(longest + "e")


def _c_sources() -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(NATIVE.glob("*.c"))}


def test_the_plan_is_never_cast_to_writable() -> None:
    """What a spawn writes is nscg_spawn_state; no cast turns the const plan writable."""
    for name, text in _c_sources().items():
        assert not re.search(r"\(\s*struct\s+nscg_plan\s*\*\s*\)", text), name


def test_fault_points_are_not_steps() -> None:
    """A STEP whose system call is the constant 0 is a fault point: FAULT_POINT says so."""
    for name in ("child.c", "mount.c"):
        text = _c_sources()[name]
        steps = re.findall(r"\bSTEP\((.*?)\);", text, re.S)
        empty = [s for s in steps if re.fullmatch(r".*,\s*0\s*", " ".join(s.split()))]
        assert not empty, f"{name}: {empty}"


def test_a_record_of_another_abi_is_refused_not_decoded() -> None:
    """A child error record written by another build (a stale nscg-init or extension)
    is a SpawnError saying so: its stage and errno would mean something else."""
    from nscg import _spawn
    from nscg.errors import SpawnError

    rec = (lib.NSCG_ABI_VERSION - 1, int(Stage.MOUNTS), 2, 7, b"open_tree")
    with pytest.raises(SpawnError, match="ABI") as e:
        _spawn._raise_child_error(rec, nscg.Container(), "/bin/true", ())
    assert e.value.stage == Stage.NONE
    good = (lib.NSCG_ABI_VERSION, int(Stage.EXEC), 2, -1, b"execve")
    with pytest.raises(SpawnError) as e2:
        _spawn._raise_child_error(good, nscg.Container(), "/bin/true", ())
    assert e2.value.stage == Stage.EXEC
