"""nscg._dbus without a bus: signatures, marshalling byte by byte, parsing, addresses."""

from __future__ import annotations

import struct

import pytest

from nscg._dbus import (
    ERROR,
    METHOD_CALL,
    SIGNAL,
    DBusError,
    Message,
    Variant,
    marshal,
    parse_address,
    split_signature,
    unmarshal,
    user_bus_address,
)

ALL_TYPES = "ybnqiuxtdsoga{sv}a(ii)vas(yay)aa{ss}"
ALL_VALUES: tuple[object, ...] = (
    255,
    True,
    -3,
    65535,
    -(2**31),
    2**32 - 1,
    -(2**63),
    2**64 - 1,
    1.5,
    "héllo",
    "/org/freedesktop/systemd1",
    "a(sv)",
    {"k": Variant("u", 7), "l": Variant("as", ["x", "y"])},
    [(1, 2), (3, 4)],
    Variant("(sb)", ("s", False)),
    [],
    (1, [1, 2, 3]),
    [{}, {"a": "b"}],
)


@pytest.mark.parametrize(
    ("sig", "types"),
    [
        ("", []),
        ("s", ["s"]),
        ("sa{sv}(ii)", ["s", "a{sv}", "(ii)"]),
        ("ssa(sv)a(sa(sv))", ["s", "s", "a(sv)", "a(sa(sv))"]),
        ("aai", ["aai"]),
        ("a{oa{sa{sv}}}", ["a{oa{sa{sv}}}"]),
    ],
)
def test_split_signature(sig: str, types: list[str]) -> None:
    assert split_signature(sig) == types


@pytest.mark.parametrize(
    "sig", ["a", "(", "(i", "()", "a{vs}", "a{s}", "a{sss}", "{ss}x", "z", ")", "a" * 33 + "i"]
)
def test_split_signature_rejects(sig: str) -> None:
    with pytest.raises(ValueError, match="signature"):
        split_signature(sig)


def test_signature_nesting_limit_is_32() -> None:
    assert split_signature("a" * 32 + "i") == ["a" * 32 + "i"]
    assert split_signature("(" * 32 + "i" + ")" * 32)
    with pytest.raises(ValueError, match="nested"):
        split_signature("(" * 33 + "i" + ")" * 33)


def test_method_call_bytes() -> None:
    """The exact wire form of a small call, written out by hand from the specification."""
    msg = Message(
        METHOD_CALL,
        7,
        path="/a",
        interface="b.c",
        member="M",
        destination="d.e",
        signature="su",
        body=("hi", 5),
    )
    data = marshal(msg)

    def field(code: int, sig: str, value: bytes) -> bytes:
        return bytes([code, 1]) + sig.encode() + b"\0" + value

    def string(s: str) -> bytes:
        return struct.pack("<I", len(s)) + s.encode() + b"\0"

    def pad8(b: bytes) -> bytes:
        return b + b"\0" * (-len(b) % 8)

    fields = b"".join(
        [
            pad8(field(1, "o", string("/a"))),
            pad8(field(2, "s", string("b.c"))),
            pad8(field(3, "s", string("M"))),
            pad8(field(6, "s", string("d.e"))),
            field(8, "g", b"\x02su\0"),
        ]
    )
    body = string("hi") + b"\0" * 1 + struct.pack("<I", 5)  # "hi\0" is 7 bytes, u aligns to 8
    head = b"l\x01\x00\x01" + struct.pack("<III", len(body), 7, len(fields)) + fields
    assert data == pad8(head) + body
    assert unmarshal(data) == msg


def test_round_trip_of_every_type() -> None:
    msg = Message(SIGNAL, 1, path="/t", interface="a.b", member="S", signature=ALL_TYPES)
    msg = msg._replace(body=ALL_VALUES)
    back = unmarshal(marshal(msg))
    assert back.body == ALL_VALUES
    assert back == msg


def test_big_endian_message_is_read() -> None:
    body = struct.pack(">I", 3) + b"abc\0" + struct.pack(">I", 42)
    fields = bytes([5, 1]) + b"u\0" + struct.pack(">I", 9)  # reply_serial, 8 bytes
    fields += bytes([8, 1]) + b"g\0" + b"\x02su\0"
    head = b"B\x02\x00\x01" + struct.pack(">III", len(body), 3, len(fields)) + fields
    head += b"\0" * (-len(head) % 8)
    msg = unmarshal(head + body)
    assert (msg.type, msg.serial, msg.reply_serial, msg.body) == (2, 3, 9, ("abc", 42))


def test_error_message_round_trip() -> None:
    msg = Message(ERROR, 2, error_name="x.y.Z", reply_serial=1, signature="s", body=("why",))
    assert unmarshal(marshal(msg)) == msg


@pytest.mark.parametrize(
    ("sig", "value", "error"),
    [
        ("u", -1, ValueError),
        ("y", 256, ValueError),
        ("b", 1, TypeError),
        ("i", True, TypeError),
        ("s", b"x", TypeError),
        ("s", "a\0b", ValueError),
        ("o", "not/a/path", ValueError),
        ("o", "/trailing/", ValueError),
        ("g", "a", ValueError),
        ("v", 5, TypeError),
        ("v", Variant("ss", ("a", "b")), ValueError),
        ("(ii)", (1,), ValueError),
        ("a{sv}", [("a", Variant("s", ""))], TypeError),
        ("ai", 5, TypeError),
        ("d", "1", TypeError),
    ],
)
def test_marshal_rejects_wrong_values(sig: str, value: object, error: type[Exception]) -> None:
    msg = Message(SIGNAL, 1, path="/t", interface="a.b", member="S", signature=sig, body=(value,))
    with pytest.raises(error):
        marshal(msg)


def test_unix_fds_are_refused() -> None:
    msg = Message(SIGNAL, 1, path="/t", interface="a.b", member="S", signature="h", body=(0,))
    with pytest.raises(DBusError, match="unix fds") as e:
        marshal(msg)
    assert e.value.name == "nscg.dbus.Unsupported"


def _good() -> bytes:
    return marshal(
        Message(SIGNAL, 1, path="/t", interface="a.b", member="S", signature="bs", body=(True, "x"))
    )


def test_unmarshal_rejects_damage() -> None:
    data = _good()
    with pytest.raises(DBusError, match="length"):
        unmarshal(data[:-1])
    with pytest.raises(DBusError, match="byte order"):
        unmarshal(b"x" + data[1:])
    body_at = len(data) - 10  # b (4 bytes) + s "x" (4 + 2)
    bad_bool = data[:body_at] + struct.pack("<I", 2) + data[body_at + 4 :]
    with pytest.raises(DBusError, match="boolean"):
        unmarshal(bad_bool)
    bad_string = data[:-1] + b"y"  # no terminating NUL
    with pytest.raises(DBusError, match="bad string"):
        unmarshal(bad_string)
    too_long = data[:4] + struct.pack("<I", 1 << 28) + data[8:]
    with pytest.raises(DBusError, match="too long"):
        unmarshal(too_long)


def test_parse_address() -> None:
    assert parse_address("unix:path=/run/dbus/system_bus_socket") == ["/run/dbus/system_bus_socket"]
    assert parse_address("unix:path=/a%20b,guid=00") == ["/a b"]
    assert parse_address("tcp:host=x;unix:abstract=/tmp/dbus-x,guid=1") == [b"\0/tmp/dbus-x"]
    with pytest.raises(DBusError, match="tcp") as e:
        parse_address("tcp:host=localhost,port=1")
    assert e.value.name == "nscg.dbus.Unsupported"


def test_user_bus_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", "unix:path=/x/bus")
    assert user_bus_address() == "unix:path=/x/bus"
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS")
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1000")
    assert user_bus_address() == "unix:path=/run/user/1000/bus"
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/odd dir")
    assert parse_address(user_bus_address()) == ["/odd dir/bus"]
