"""nscg.images without privileges: config parsing, entry names, owner records, options."""

from __future__ import annotations

import pytest

from nscg.images import ImageConfig, ImageFormatError, LayerError
from nscg.images._apply import components, rootless_owner
from nscg.images._source import parse_digest
from nscg.images.image import _tag_matches

HEX = "a" * 64


def _doc(**config: object) -> dict[str, object]:
    return {
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{HEX}"]},
        "history": [{"created_by": "x", "empty_layer": True}],
    }


def test_config_fields() -> None:
    c = ImageConfig.from_json(
        _doc(Env=["A=1", "B=x=y"], Entrypoint=["/e"], Cmd=["c"], WorkingDir="/w", User="u:g",
             ExposedPorts={"80/tcp": {}}, Labels={"k": "v"}, StopSignal="SIGINT")
    )  # fmt: skip
    assert c.env == (("A", "1"), ("B", "x=y")) and c.argv == ("/e", "c")
    assert (c.working_dir, c.user, c.stop_signal) == ("/w", "u:g", "SIGINT")
    assert c.exposed_ports == ("80/tcp",) and c.labels == {"k": "v"}
    assert c.history[0].empty_layer and c.diff_ids == (f"sha256:{HEX}",)
    assert ImageConfig.from_json(_doc()).argv == ()


@pytest.mark.parametrize(
    "bad",
    [{"Env": ["NOEQUALS"]}, {"Env": "A=1"}, {"Cmd": [1]}, {"User": 0}, {"Labels": []}],
)
def test_config_type_errors(bad: dict[str, object]) -> None:
    with pytest.raises(ImageFormatError):
        ImageConfig.from_json(_doc(**bad))


def test_config_rootfs_type() -> None:
    doc = _doc()
    doc["rootfs"] = {"type": "other", "diff_ids": []}
    with pytest.raises(ImageFormatError, match="layers"):
        ImageConfig.from_json(doc)


def test_entry_names() -> None:
    assert components("./a//b/./c", digest="d", limit=100) == ("a", "b", "c")
    assert components("/abs/x", digest="d", limit=100) == ("abs", "x")
    assert components("./", digest="d", limit=100) == ()
    for bad in ("../x", "a/../../x", "a/.."):
        with pytest.raises(LayerError, match=r"'\.\.'"):
            components(bad, digest="d", limit=100)
    with pytest.raises(LayerError, match="longer"):
        components("x" * 101, digest="d", limit=100)
    with pytest.raises(LayerError, match="NUL"):
        components("a\0b", digest="d", limit=100)


def test_rootless_owner_is_umocis_protobuf() -> None:
    # what umoci --rootless wrote for uid 1000, gid 1001 (see the rootless test)
    assert rootless_owner(1000, 1001) == bytes.fromhex("08e80710e907")
    assert rootless_owner(0, 5) == b"\x10\x05" and rootless_owner(0, 0) == b""


def test_digests() -> None:
    assert parse_digest(f"sha256:{HEX}") == ("sha256", HEX)
    for bad in ("sha256:xyz", f"md5:{HEX}", HEX, f"sha256:{HEX.upper()}", None):
        with pytest.raises(ImageFormatError):
            parse_digest(bad)


def test_docker_tags() -> None:
    assert _tag_matches("docker.io/library/alpine:3.20", "alpine:3.20")
    assert _tag_matches("docker.io/library/alpine:3.20", "3.20")
    assert _tag_matches("localhost/x/y:t", "x/y:t")
    assert _tag_matches("alpine:latest", "alpine")
    assert not _tag_matches("alpine:3.20", "alpine")
    assert not _tag_matches("alpine:3.20", "3.2")


def test_errors_pickle_and_are_top_level() -> None:
    import pickle

    import nscg
    from nscg.images import DigestMismatchError, TagNotFoundError

    for err in (
        LayerError("bad", digest=f"sha256:{HEX}", entry="../x"),
        DigestMismatchError("lies", digest="sha256:a", actual="sha256:b"),
        TagNotFoundError("no", tag="t", available=("u",)),
        ImageFormatError("not an image"),
    ):
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err) and str(back) == str(err)
        assert back.__dict__ == err.__dict__
        assert type(err).__module__ == "nscg" and getattr(nscg, type(err).__name__) is type(err)
        assert isinstance(err, nscg.ImageError) and isinstance(err, nscg.NscgError)
