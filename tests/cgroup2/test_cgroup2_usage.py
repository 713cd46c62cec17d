"""Result.usage with a cgroup: the sandbox's own figures whatever the caller holds.

The measurements run in a fresh interpreter holding 0 or 300 MiB (see
tests/integration/test_usage.py for the same without a cgroup).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from tests.conftest import child_pythonpath

pytestmark = pytest.mark.cgroup2

MiB = 1 << 20

_MEASURE = """
import json, sys
from nscg import Container

held = bytearray({hold} << 20)
for i in range(0, len(held), 4096):
    held[i] = 1
py = sys.executable
touch = "b = bytearray(100 << 20)\\nfor i in range(0, len(b), 4096): b[i] = 1"
spin = "import time\\nt = time.process_time()\\nwhile time.process_time() - t < 0.3: pass"
payloads = {{"true": ["true"], "touch": [py, "-c", touch], "spin": [py, "-c", spin]}}
out = {{}}
for what, argv in payloads.items():
    r = Container().with_cgroup().run(argv, timeout=300)
    u = r.usage
    out[what] = [u.max_rss, u.memory_peak, u.cpu_total, r.wall_time, r.returncode]
print(json.dumps(out))
"""


def _measure(hold: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": child_pythonpath()}
    r = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_MEASURE.format(hold=hold))],
        capture_output=True,
        timeout=600,
        env=env,
        check=False,
    )
    assert r.returncode == 0, r.stderr.decode()
    doc: dict[str, Any] = json.loads(r.stdout.decode().strip().splitlines()[-1])
    return doc


@pytest.mark.parametrize("hold", [0, 300])
def test_the_cgroup_reports_the_sandboxs_memory_and_cpu(hold: int) -> None:
    doc = _measure(hold)
    rss, peak, _, _, rc = doc["true"]
    assert rc == 0 and peak is not None and peak < 32 * MiB, doc
    if hold:
        assert rss is None, doc  # (the caller's 300 MiB are not reported as the payload's)
    rss, peak, _, _, rc = doc["touch"]
    assert rc == 0 and peak is not None and 100 * MiB <= peak < 200 * MiB, doc
    if hold:
        assert rss is None, doc
    else:
        assert rss is not None and 100 * MiB <= rss < 150 * MiB, doc
    _, _, cpu, wall, rc = doc["spin"]
    assert rc == 0 and 0.3 <= cpu <= wall + 0.05, doc
