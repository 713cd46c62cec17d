"""An overlay's lower directories as fsconfig options: one string of at most 255 bytes."""

from __future__ import annotations

import pytest

from nscg.errors import SpecError
from nscg.rootfs import FSCONFIG_MAX_STRING, lowerdir_options


def test_lowerdir_options() -> None:
    short = ["/a", "/b"]
    assert lowerdir_options(short) == (("lowerdir", "/a:/b"),)
    many = [f"/var/lib/nscg/layers/sha256/{i:064x}/fs" for i in range(5)]
    assert lowerdir_options(many) == tuple(("lowerdir+", lo) for lo in many)
    with pytest.raises(SpecError, match="longer than"):
        lowerdir_options(["/" + "x" * FSCONFIG_MAX_STRING, "/y"])
