"""Fixtures of the image tests: images built once per session with umoci and skopeo."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from nscg.images._apply import rmtree
from tests.conftest import skip_or_fail, static_busybox
from tests.images import imagebuild

FORMS = ("layout", "oci-zstd", "oci-plain", "oci-archive", "docker-archive")


def need_image_tools() -> None:
    """Skip (or fail under NSCG_REQUIRE=images) unless umoci and skopeo are installed."""
    missing = imagebuild.missing_tools()
    if missing:
        skip_or_fail(
            "images",
            f"needs {', '.join(missing)} to build test images (apt-get install umoci skopeo)",
        )


@pytest.fixture(scope="session")
def images_dir() -> Iterator[Path]:
    """A directory (any uid may read it) holding the test image in every form."""
    need_image_tools()
    busybox = static_busybox()
    top = Path(tempfile.mkdtemp(prefix="nscg-images-", dir="/var/tmp"))
    try:
        os.chmod(top, 0o755)
        layout = imagebuild.build_layout(top, busybox)
        for form in FORMS[1:]:
            imagebuild.convert(layout, top / form, form)
        for dirpath, dirnames, filenames in os.walk(top):
            for n in dirnames:
                os.chmod(os.path.join(dirpath, n), 0o755)
            for n in filenames:
                os.chmod(os.path.join(dirpath, n), 0o644)
        yield top
    finally:
        shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
def store_dir() -> Iterator[Path]:
    """An empty store directory (removed afterwards, whatever modes the layers have)."""
    d = Path(tempfile.mkdtemp(prefix="nscg-store-", dir="/var/tmp"))
    os.chmod(d, 0o755)
    try:
        yield d / "store"
    finally:
        rmtree(str(d))


@pytest.fixture(autouse=True)
def _no_default_store(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every image test's default store (NSCG_STORE) is a temporary one: none writes
    the machine's /var/lib/nscg or ~/.local/share/nscg."""
    d = Path(tempfile.mkdtemp(prefix="nscg-default-store-", dir="/var/tmp"))
    os.chmod(d, 0o755)
    monkeypatch.setenv("NSCG_STORE", str(d / "store"))
    try:
        yield
    finally:
        rmtree(str(d))
