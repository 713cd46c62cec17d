"""Where a root caller's sandbox ids go: /etc/subuid parsing and the fixed range."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from nscg import namespaces
from nscg.errors import UnsupportedError
from nscg.namespaces import DEFAULT_ROOT_RANGE_START, ROOT_RANGE_SIZE, parse_subid, root_range


@pytest.fixture()
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Path]]:
    """ID_FILES pointed at empty files in tmp_path (the cache is keyed by the paths)."""
    out = {}
    for name in ("subuid", "subgid", "passwd", "group"):
        p = tmp_path / name
        p.write_text("")
        out[name] = p
        monkeypatch.setitem(namespaces.ID_FILES, name, str(p))
    yield out


def test_parse_subid_skips_comments_and_malformed_lines() -> None:
    text = (
        "# comment\n\nroot:100000:65536\n  alice:165536:65536  \nbad line\nbob:x:1\n"
        "carol:-5:10\ndave:10:0\neve:4294967290:100\n:1:1\n"
    )
    assert parse_subid(text) == [("root", 100000, 65536), ("alice", 165536, 65536)]


def test_roots_subuid_entry_is_used(files: dict[str, Path]) -> None:
    files["subuid"].write_text("alice:100000:65536\nroot:300000:131072\n")
    files["subgid"].write_text("0:400000:65536\n")
    rr = root_range()
    assert (rr.uid, rr.gid, rr.count) == (300000, 400000, ROOT_RANGE_SIZE)
    assert rr.uid_source == str(files["subuid"]) and rr.gid_source == str(files["subgid"])


def test_too_small_entry_falls_back_to_the_fixed_range(files: dict[str, Path]) -> None:
    files["subuid"].write_text("root:300000:1000\n")
    rr = root_range()
    assert (rr.uid, rr.gid) == (DEFAULT_ROOT_RANGE_START, DEFAULT_ROOT_RANGE_START)
    assert rr.uid_source == rr.gid_source == "default"


def test_fixed_range_skips_used_ids_and_other_users_ranges(files: dict[str, Path]) -> None:
    base = DEFAULT_ROOT_RANGE_START
    # an account inside the first block, another user's subuid range over the second
    files["passwd"].write_text(f"root:x:0:0::/root:/bin/sh\nodd:x:{base + 7}:5::/:/bin/sh\n")
    files["subuid"].write_text(f"alice:{base + ROOT_RANGE_SIZE + 10}:20\n")
    # a group in the first gid block, and a user whose primary gid is in the second
    files["group"].write_text(f"root:x:0:\nodd:x:{base + 1}:\n")
    files["passwd"].write_text(
        files["passwd"].read_text() + f"p:x:1000:{base + ROOT_RANGE_SIZE}::/:/bin/sh\n"
    )
    rr = root_range()
    assert rr.uid == base + 2 * ROOT_RANGE_SIZE
    assert rr.gid == base + 2 * ROOT_RANGE_SIZE
    assert rr.uid_map()[0].line() == f"0 {base + 2 * ROOT_RANGE_SIZE} 65536\n"


def test_no_free_block_is_a_typed_error(files: dict[str, Path]) -> None:
    files["subuid"].write_text(f"alice:{DEFAULT_ROOT_RANGE_START}:{256 * ROOT_RANGE_SIZE}\n")
    with pytest.raises(UnsupportedError, match="root:START:65536"):
        root_range()


def test_the_default_range_is_free_on_this_host() -> None:
    rr = root_range()
    text = Path("/etc/passwd").read_text()
    uids = {int(ln.split(":")[2]) for ln in text.splitlines() if ln.count(":") >= 6}
    assert not any(rr.uid <= u < rr.uid + rr.count for u in uids)
    assert rr.uid >= 65536 and rr.gid >= 65536 and rr.uid + rr.count <= 2**32 - 1
