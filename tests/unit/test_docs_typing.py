"""Every Python example in docs/*.md passes ``mypy --strict`` (issue 15 item 5).

The examples are what users copy: each page's blocks (``python``, ``testcode``,
``testsetup``, the ``>>>`` lines of ``doctest``) become one module, after the
imports ``doctest_global_setup`` gives them, and mypy checks them all with
``assert_type`` checks of the key results (the typed surface users rely on).
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import mypy.api
import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

_FENCE = re.compile(r"^```(?:\{(\w+)\}|(\w+))[^\n]*\n(.*?)^```", re.M | re.S)
_OPTION = re.compile(r"\A(?:[ \t]*:[\w-]+:[^\n]*\n)+")
_PROLOGUE = """\
from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys

import nscg
"""

#: the typed surface, checked as users would meet it
KEY_RESULTS = """
import ipaddress

from typing_extensions import assert_type

from nscg.capabilities import Capabilities
from nscg.cgroups import CgroupUsage, CgroupV2
from nscg.seccomp import Seccomp
from typing import Literal

box = nscg.Container()
r_text = box.run(["true"], capture_output=True, text=True)
assert_type(r_text, nscg.Result[str])
assert_type(r_text.stdout, str)
assert_type(box.run(["true"], capture_output=True).stdout, bytes)
assert_type(box.run(["true"]).stdout, bytes | None)
assert_type(box.run(["true"], encoding="utf-8").stdout, str | None)
assert_type(box.run(["true"], text=True, input="x", capture_output=True).stderr, str)
r_any = box.run(["true"])
assert_type(r_any.changes, nscg.Changes | None)
assert_type(r_any.usage, nscg.Usage)
assert_type(r_any.usage.cgroup, CgroupUsage | None)
with box.spawn(["true"], stdout=nscg.PIPE, text=True) as p_text:
    assert_type(p_text, nscg.Process[str])
    assert_type(p_text.communicate()[0], str | None)
    assert_type(p_text.cgroup, CgroupV2 | None)
with box.spawn(["true"]) as p_bin:
    assert_type(p_bin, nscg.Process[bytes])
    assert_type(p_bin.exec(["true"], text=True), nscg.Process[str])
    assert_type(p_bin.run_inside(["true"], capture_output=True, text=True), nscg.Result[str])
options: nscg.RunOptions = {"timeout": 5, "cwd": "/"}
assert_type(box.run(["true"], **options), nscg.Result[str | bytes | None])
assert_type(box.capabilities, Capabilities | Literal["inherit"] | None)
assert_type(box.seccomp, Seccomp | Literal["default", "unconfined"])
try:
    box.run(["true"])
except nscg.SpawnError as e:
    assert_type(e.stage, nscg.Stage)
assert_type(nscg.Network.veth("10.0.0.2/24", "10.0.0.1/24").address, ipaddress.IPv4Interface)


def _on_a_bridge(br: nscg.Bridge) -> None:
    assert_type(br.link().address.ip, ipaddress.IPv4Address)
"""


def _page_code(md: str) -> str:
    """The page's Python, in order: code blocks whole, doctests' source lines."""
    parts: list[str] = []
    for m in _FENCE.finditer(md):
        kind = m.group(1) or m.group(2)
        body = _OPTION.sub("", m.group(3))  # a directive's ":skipif: ..." lines
        if kind in ("python", "testcode", "testsetup"):
            parts.append(textwrap.dedent(body))
        elif kind == "doctest":
            parts.append(_doctest_source(body))
    return "\n".join(parts)


def _doctest_source(body: str) -> str:
    """The source lines of a doctest block (``>>>`` and the ``...`` that continue it)."""
    src: list[str] = []
    in_source = False
    for ln in body.splitlines():
        if ln.startswith(">>>"):
            src.append(ln[4:])
            in_source = True
        elif in_source and ln.startswith("..."):
            src.append(ln[4:])
        else:  # expected output
            in_source = False
    return "\n".join(src) + "\n"


def _modules(tmp: Path) -> list[str]:
    files = []
    for page in sorted(DOCS.glob("*.md")):
        code = _page_code(page.read_text())
        if not code.strip():
            continue
        f = tmp / f"doc_{page.stem}.py"
        f.write_text(_PROLOGUE + "\n" + code)
        files.append(str(f))
    key = tmp / "key_results.py"
    key.write_text(_PROLOGUE + KEY_RESULTS)
    files.append(str(key))
    return files


def test_docs_examples_pass_mypy_strict(tmp_path: Path) -> None:
    files = _modules(tmp_path)
    assert len(files) > 10  # every page with an example, and the key results
    out, err, status = mypy.api.run(
        [
            "--strict",
            "--no-incremental",
            "--cache-dir=/dev/null",
            "--python-version=3.10",
            "--allow-redefinition",  # examples reuse names (r = ...) for other types
            "--disable-error-code=no-redef",
            *files,
        ]
    )
    if status != 0:
        pytest.fail(f"mypy --strict on the docs' examples:\n{out}{err}")
