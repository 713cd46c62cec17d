"""Result.usage and wall_time tell the payload's truth, in every spawn mode.

Each measurement runs in a fresh interpreter (root, or uid 65534 through
setpriv), so that the caller's own peak RSS is known and small, or made large
on purpose: a sandbox's processes exec from the caller's memory, and Linux
keeps the peak RSS of that memory as a floor of their ``ru_maxrss``
(Usage.max_rss says None rather than report the caller's figure).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from tests.conftest import child_pythonpath, hidden_from_sandboxes, need_root, run_as_nobody

MiB = 1 << 20

#: The measuring program: holds HOLD MiB itself, then runs each payload in
#: each mode and prints {mode: {payload: [max_rss, cpu_total, wall_time, rc]}}.
#: "entering" runs the payload inside a running sandbox (a joined pid
#: namespace: the process starts on a copy of the caller's memory).
_MEASURE = """
import json, sys, time
import nscg
from nscg import Container, Namespace

HOLD = {hold}
held = bytearray(HOLD << 20)
for i in range(0, len(held), 4096):
    held[i] = 1
py = sys.executable
touch = "b = bytearray({touch} << 20)\\nfor i in range(0, len(b), 4096): b[i] = 1"
spin = "import time\\nt = time.process_time()\\nwhile time.process_time() - t < 0.3: pass"
payloads = {{
    "true": ["true"],
    "touch": [py, "-c", touch],
    "spin": [py, "-c", spin],
    "sleep": ["sleep", "0.2"],
}}
modes = {{
    "init": Container(),
    "pid1": Container().with_init(False),
    "vfork": Container().with_namespaces(Namespace.NONE).without_rootfs()
        .with_seccomp("unconfined").with_capabilities("inherit"),
}}
out = {{}}
for name, c in modes.items():
    out[name] = {{}}
    for what, argv in payloads.items():
        t0 = time.monotonic()
        r = c.run(argv)
        took = time.monotonic() - t0
        u = r.usage
        out[name][what] = [u.max_rss, u.cpu_total, r.wall_time, r.returncode, took]
with Container().spawn(["sleep", "30"]) as box:
    out["entering"] = {{}}
    for what, argv in payloads.items():
        t0 = time.monotonic()
        r = box.run_inside(argv)
        took = time.monotonic() - t0
        u = r.usage
        out["entering"][what] = [u.max_rss, u.cpu_total, r.wall_time, r.returncode, took]
    box.kill()
print(json.dumps(out))
"""


def _measure(hold: int, touch: int, rootless: bool) -> dict[str, Any]:
    code = _MEASURE.format(hold=hold, touch=touch)
    if rootless:
        doc: dict[str, Any] = run_as_nobody(code, timeout=120)
        return doc
    need_root()
    env = {**os.environ, "PYTHONPATH": child_pythonpath()}
    r = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert r.returncode == 0, r.stderr.decode()
    result: dict[str, Any] = json.loads(r.stdout.decode().strip().splitlines()[-1])
    return result


@pytest.fixture(autouse=True)
def _visible() -> None:
    problem = hidden_from_sandboxes()
    if problem:
        pytest.skip(problem)


@pytest.mark.parametrize("rootless", [False, True], ids=["root", "rootless"])
def test_a_payload_of_known_use_reports_its_own_figures(rootless: bool) -> None:
    """From a small caller: the payload's peak RSS, CPU time and wall time, in every mode."""
    doc = _measure(hold=0, touch=100, rootless=rootless)
    assert set(doc) == {"init", "pid1", "vfork", "entering"}
    for mode, rows in doc.items():
        rss, _, _, rc, _ = rows["touch"]
        assert rc == 0, (mode, rows)
        # 100 MiB touched, plus the interpreter (~10 MiB)
        assert rss is not None and 100 * MiB <= rss < 150 * MiB, (mode, rss)
        _, cpu, wall, rc, took = rows["spin"]
        assert rc == 0 and 0.3 <= cpu <= wall + 0.05, (mode, rows["spin"])
        _, cpu, wall, rc, took = rows["sleep"]
        # from the spawn call to the reap: the payload's 0.2 s, within run()'s own time
        assert rc == 0 and 0.2 <= wall <= took and cpu < 0.1, (mode, rows["sleep"])
        rss, *_ = rows["true"]
        # the payload's own figure is below the caller's (~30 MiB): not told
        assert rss is None or rss < 30 * MiB, (mode, rss)


@pytest.mark.parametrize("rootless", [False, True], ids=["root", "rootless"])
def test_the_callers_memory_is_not_reported_as_the_payloads(rootless: bool) -> None:
    """From a caller holding 300 MiB: `true` does not report 300 MiB; a bigger payload its own."""
    doc = _measure(hold=300, touch=400, rootless=rootless)
    for mode, rows in doc.items():
        rss, *_ = rows["true"]
        # (before: 319 MiB for `true`, the caller's peak)
        assert rss is None, (mode, rss)
        rss, *_ = rows["touch"]
        assert rss is not None and 400 * MiB <= rss < 450 * MiB, (mode, rss)
