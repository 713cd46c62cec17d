"""A small D-Bus client: what nscg needs to ask systemd for a cgroup (issue 18).

Why our own and not a library: nscg's run-time dependencies are cffi, attrs and
typing-extensions, and limits should work out of the box wherever systemd runs,
so the client cannot be an optional extra. What nscg sends and receives is a
handful of messages (Hello, AddMatch, StartTransientUnit, StopUnit, GetUnit,
Properties.Get, the JobRemoved signal), on a unix socket, authenticated with
SASL EXTERNAL: a few hundred lines, tested against a real ``dbus-daemon`` (which
checks every message it routes) and against systemd in the test VM.

What it does:

- transports ``unix:path=`` and ``unix:abstract=`` (a list separated by ``;``
  is tried in order); :func:`system_bus_address` and :func:`user_bus_address`
  find the buses as sd-bus does;
- SASL ``EXTERNAL`` with the effective uid, then ``Hello``;
- method calls with their replies and errors (:class:`DBusError`), signals
  (:meth:`Connection.add_match`, :meth:`Connection.wait_signal`);
- the marshalling of every D-Bus type but unix fds (``h``), both byte orders
  when reading, little-endian when writing.

Python values: ``y n q i u x t`` are ``int``, ``b`` is ``bool``, ``d`` is
``float``, ``s o g`` are ``str``, an array is a ``list`` (``a{..}`` a ``dict``), a
struct a ``tuple`` and a variant a :class:`Variant`. A connection serves one
call at a time (a lock); signals that arrive meanwhile are queued.
"""

from __future__ import annotations

import collections
import os
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import NamedTuple

from nscg.errors import NscgError

METHOD_CALL, METHOD_RETURN, ERROR, SIGNAL = 1, 2, 3, 4
NO_REPLY_EXPECTED = 0x1

_BUS = "org.freedesktop.DBus"
_BUS_PATH = "/org/freedesktop/DBus"
_MAX_MESSAGE = 1 << 27  # 128 MiB, the specification's limit
_MAX_ARRAY = 1 << 26  # 64 MiB
_MAX_DEPTH = 32  # arrays, and separately structs, per the specification

# header field codes -> (name, signature)
_FIELDS: dict[int, tuple[str, str]] = {
    1: ("path", "o"),
    2: ("interface", "s"),
    3: ("member", "s"),
    4: ("error_name", "s"),
    5: ("reply_serial", "u"),
    6: ("destination", "s"),
    7: ("sender", "s"),
    8: ("signature", "g"),
    9: ("unix_fds", "u"),
}
_FIXED: dict[str, tuple[str, int]] = {  # code -> (struct format, size = alignment)
    "y": ("B", 1),
    "b": ("I", 4),
    "n": ("h", 2),
    "q": ("H", 2),
    "i": ("i", 4),
    "u": ("I", 4),
    "x": ("q", 8),
    "t": ("Q", 8),
    "d": ("d", 8),
    "h": ("I", 4),
}
_ALIGN = {**{c: size for c, (_, size) in _FIXED.items()}, "s": 4, "o": 4, "g": 1}
_ALIGN.update({"a": 4, "(": 8, "{": 8, "v": 1})
_BASIC = frozenset("ybnqiuxtdsogh")
_PATH_RE = re.compile(r"/\Z|(/[A-Za-z0-9_]+)+\Z")


class DBusError(NscgError):
    """A D-Bus call failed: an error reply, or a bus nscg could not talk to.

    Attributes:
        name: the D-Bus error name (``org.freedesktop.systemd1.NoSuchUnit``), or
            ``nscg.dbus.*`` for a problem on this side (``AuthFailed``,
            ``Disconnected``, ``Protocol``, ``Unsupported``).
        message: the error's text.
    """

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}" if message else name)
        self.name = name
        self.message = message


class Variant(NamedTuple):
    """A D-Bus variant: a value with its own signature (one complete type)."""

    signature: str
    value: object


# ------------------------------------------------------------------ signatures
def _dict_entry_end(sig: str, i: int, arrays: int, structs: int) -> int:
    """The index just after ``{KV}`` starting at ``sig[i]`` (inside an array)."""
    if structs >= _MAX_DEPTH:
        raise ValueError(f"signature {sig!r}: structs nested too deeply")
    if i + 1 >= len(sig) or sig[i + 1] not in _BASIC:
        raise ValueError(f"signature {sig!r}: a dict key must be a basic type")
    j = _type_end(sig, i + 2, arrays, structs + 1)
    if j >= len(sig) or sig[j] != "}":
        raise ValueError(f"signature {sig!r}: a dict entry has one key and one value")
    return j + 1


def _struct_end(sig: str, i: int, arrays: int, structs: int) -> int:
    """The index just after ``(...)`` starting at ``sig[i]``."""
    if structs >= _MAX_DEPTH:
        raise ValueError(f"signature {sig!r}: structs nested too deeply")
    j = i + 1
    if j < len(sig) and sig[j] == ")":
        raise ValueError(f"signature {sig!r}: empty struct")
    while j < len(sig) and sig[j] != ")":
        j = _type_end(sig, j, arrays, structs + 1)
    if j >= len(sig):
        raise ValueError(f"signature {sig!r}: unclosed struct")
    return j + 1


def _type_end(sig: str, i: int, arrays: int = 0, structs: int = 0) -> int:
    """The index just after the complete type that starts at ``sig[i]``.

    Recursive, but bounded: the specification's 32 levels each of arrays and structs.
    """
    if i >= len(sig):
        raise ValueError(f"signature {sig!r}: a type is missing at the end")
    c = sig[i]
    if c in _BASIC or c == "v":
        return i + 1
    if c == "a":
        if arrays >= _MAX_DEPTH:
            raise ValueError(f"signature {sig!r}: arrays nested too deeply")
        if i + 1 < len(sig) and sig[i + 1] == "{":
            return _dict_entry_end(sig, i + 1, arrays + 1, structs)
        return _type_end(sig, i + 1, arrays + 1, structs)
    if c == "(":
        return _struct_end(sig, i, arrays, structs)
    raise ValueError(f"signature {sig!r}: unexpected {c!r} at {i}")


def split_signature(sig: str) -> list[str]:
    """The complete types of a signature: ``"sa{sv}(ii)"`` -> ``["s", "a{sv}", "(ii)"]``.

    Raises:
        ValueError: the signature is invalid (or longer than 255 characters).
    """
    if len(sig) > 255:
        raise ValueError(f"signature longer than 255 characters: {sig[:40]!r}...")
    out, i = [], 0
    while i < len(sig):
        j = _type_end(sig, i)
        out.append(sig[i:j])
        i = j
    return out


def _struct_fields(sig: str) -> list[str]:
    """The field types of ``(...)`` or ``{..}``."""
    return split_signature(sig[1:-1])


def _kind(value: object) -> str:
    return type(value).__name__


# ------------------------------------------------------------------ marshalling
class _Writer:
    """Little-endian marshalling into a growing buffer (offsets relative to the message)."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def pad(self, n: int) -> None:
        self.buf += b"\0" * (-len(self.buf) % n)

    def write_all(self, sig: str, values: Sequence[object]) -> None:
        types = split_signature(sig)
        if len(types) != len(values):
            raise ValueError(f"signature {sig!r} needs {len(types)} values, got {len(values)}")
        for t, v in zip(types, values, strict=True):
            self.write(t, v)

    def write(self, t: str, value: object) -> None:
        c = t[0]
        if c in _FIXED:
            self._fixed(c, value)
        elif c in "sog":
            self._string(c, value)
        elif c == "v":
            self._variant(value)
        elif c in "({":
            self._struct(t, value)
        else:  # "a"; split_signature rejects anything else
            self._array(t, value)

    def _fixed(self, c: str, value: object) -> None:
        fmt, size = _FIXED[c]
        if c == "h":
            raise DBusError("nscg.dbus.Unsupported", "unix fds ('h') are not supported")
        if c == "b":
            if not isinstance(value, bool):
                raise TypeError(f"D-Bus 'b' needs a bool, not {_kind(value)}")
        elif c == "d":
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise TypeError(f"D-Bus 'd' needs a float, not {_kind(value)}")
        elif not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"D-Bus {c!r} needs an int, not {_kind(value)}")
        self.pad(size)
        try:
            self.buf += struct.pack("<" + fmt, value)
        except struct.error:
            raise ValueError(f"{value!r} does not fit D-Bus type {c!r}") from None

    def _string(self, c: str, value: object) -> None:
        if not isinstance(value, str):
            raise TypeError(f"D-Bus {c!r} needs a str, not {_kind(value)}")
        data = value.encode()
        if b"\0" in data:
            raise ValueError(f"a D-Bus string cannot contain NUL: {value!r}")
        if c == "g":
            split_signature(value)
            self.buf += bytes([len(data)]) + data + b"\0"
            return
        if c == "o" and not _PATH_RE.match(value):
            raise ValueError(f"invalid D-Bus object path {value!r}")
        self.pad(4)
        self.buf += struct.pack("<I", len(data)) + data + b"\0"

    def _variant(self, value: object) -> None:
        if not isinstance(value, Variant):
            raise TypeError(f"D-Bus 'v' needs a Variant, not {_kind(value)}")
        if len(split_signature(value.signature)) != 1:
            raise ValueError(f"a variant holds one complete type, not {value.signature!r}")
        self._string("g", value.signature)
        self.write(value.signature, value.value)

    def _struct(self, t: str, value: object) -> None:
        if not isinstance(value, (tuple, list)):
            raise TypeError(f"D-Bus struct {t} needs a tuple, not {_kind(value)}")
        fields = _struct_fields(t)
        if len(fields) != len(value):
            raise ValueError(f"struct {t} needs {len(fields)} fields, got {len(value)}")
        self.pad(8)
        for ft, fv in zip(fields, value, strict=True):
            self.write(ft, fv)

    def _array(self, t: str, value: object) -> None:
        elem = t[1:]
        items: Iterable[object]
        if elem[0] == "{":
            if not isinstance(value, Mapping):
                raise TypeError(f"D-Bus {t} needs a dict, not {_kind(value)}")
            items = list(value.items())
        elif isinstance(value, (list, tuple)):
            items = value
        else:
            raise TypeError(f"D-Bus array {t} needs a list, not {_kind(value)}")
        self.pad(4)
        at = len(self.buf)
        self.buf += b"\0\0\0\0"
        self.pad(_ALIGN[elem[0]])
        start = len(self.buf)
        for item in items:
            self.write(elem, item)
        length = len(self.buf) - start
        if length > _MAX_ARRAY:
            raise ValueError(f"D-Bus array longer than {_MAX_ARRAY} bytes")
        self.buf[at : at + 4] = struct.pack("<I", length)


class _Reader:
    """Unmarshalling from ``data`` in byte order ``order`` (``<`` or ``>``)."""

    def __init__(self, data: bytes, order: str, pos: int = 0) -> None:
        self.data, self.order, self.pos = data, order, pos

    def _need(self, n: int) -> None:
        if self.pos + n > len(self.data):
            raise DBusError("nscg.dbus.Protocol", "message truncated")

    def align(self, n: int) -> None:
        pad = -self.pos % n
        self._need(pad)
        if any(self.data[self.pos : self.pos + pad]):
            raise DBusError("nscg.dbus.Protocol", "non-zero padding")
        self.pos += pad

    def _fixed(self, c: str) -> int | float | bool:
        fmt, size = _FIXED[c]
        self.align(size)
        self._need(size)
        (v,) = struct.unpack_from(self.order + fmt, self.data, self.pos)
        self.pos += size
        if c == "b":
            if v not in (0, 1):
                raise DBusError("nscg.dbus.Protocol", f"boolean {v}")
            return bool(v)
        return v  # type: ignore[no-any-return]  # struct.unpack_from returns Any

    def _string(self, c: str) -> str:
        if c == "g":
            self._need(1)
            n = self.data[self.pos]
            self.pos += 1
        else:
            n = int(self._fixed("u"))
        self._need(n + 1)
        raw = self.data[self.pos : self.pos + n]
        if self.data[self.pos + n] != 0 or b"\0" in raw:
            raise DBusError("nscg.dbus.Protocol", "bad string")
        self.pos += n + 1
        try:
            return raw.decode()
        except UnicodeDecodeError:
            raise DBusError("nscg.dbus.Protocol", "string is not UTF-8") from None

    def read_all(self, sig: str) -> tuple[object, ...]:
        return tuple(self.read(t) for t in split_signature(sig))

    def read(self, t: str) -> object:
        c = t[0]
        if c in _FIXED:
            return self._fixed(c)
        if c in "sog":
            return self._string(c)
        if c == "v":
            sig = self._string("g")
            try:
                (one,) = split_signature(sig)
            except ValueError:
                raise DBusError("nscg.dbus.Protocol", f"bad variant signature {sig!r}") from None
            return Variant(sig, self.read(one))
        if c in "({":
            self.align(8)
            return tuple(self.read(f) for f in _struct_fields(t))
        return self._array(t)

    def _array(self, t: str) -> list[object] | dict[object, object]:
        n = int(self._fixed("u"))
        if n > _MAX_ARRAY:
            raise DBusError("nscg.dbus.Protocol", f"array of {n} bytes")
        elem = t[1:]
        self.align(_ALIGN[elem[0]])
        end = self.pos + n
        self._need(n)
        items = []
        while self.pos < end:
            items.append(self.read(elem))
        if self.pos != end:
            raise DBusError("nscg.dbus.Protocol", "array length mismatch")
        if elem[0] == "{":
            return dict(items)  # type: ignore[arg-type]  # (key, value) pairs, by the signature
        return items


# ------------------------------------------------------------------ messages
class Message(NamedTuple):
    """One D-Bus message (the header fields that nscg uses, and the body)."""

    type: int
    serial: int
    flags: int = 0
    path: str | None = None
    interface: str | None = None
    member: str | None = None
    error_name: str | None = None
    reply_serial: int | None = None
    destination: str | None = None
    sender: str | None = None
    signature: str = ""
    body: tuple[object, ...] = ()


def marshal(msg: Message) -> bytes:
    """The wire form of ``msg`` (little-endian, protocol version 1)."""
    body = _Writer()
    body.write_all(msg.signature, msg.body)
    fields: list[tuple[int, Variant]] = []
    for code, (name, sig) in _FIELDS.items():
        value = getattr(msg, name, None)
        if name == "signature" and not value:
            continue
        if value is not None:
            fields.append((code, Variant(sig, value)))
    head = _Writer()
    head.write_all(
        "yyyyuua(yv)", [ord("l"), msg.type, msg.flags, 1, len(body.buf), msg.serial, fields]
    )
    head.pad(8)
    return bytes(head.buf + body.buf)


def _header_size(prefix: bytes) -> tuple[int, int]:
    """From the first 16 bytes: (header length padded to 8, body length)."""
    order = {ord("l"): "<", ord("B"): ">"}.get(prefix[0])
    if order is None:
        raise DBusError("nscg.dbus.Protocol", f"bad byte order {prefix[0]!r}")
    body_len, _serial, fields_len = struct.unpack_from(order + "III", prefix, 4)
    head = 16 + fields_len
    head += -head % 8
    if head + body_len > _MAX_MESSAGE:
        raise DBusError("nscg.dbus.Protocol", "message too long")
    return head, body_len


def unmarshal(data: bytes) -> Message:
    """Parse one whole message (as :func:`marshal` writes it, in either byte order)."""
    head_len, body_len = _header_size(data[:16])
    if len(data) != head_len + body_len:
        raise DBusError("nscg.dbus.Protocol", "message length mismatch")
    order = "<" if data[0] == ord("l") else ">"
    r = _Reader(data, order)
    _e, mtype, flags, version, _blen, serial, fields = r.read_all("yyyyuua(yv)")
    if version != 1:
        raise DBusError("nscg.dbus.Protocol", f"protocol version {version}")
    r.align(8)
    kw: dict[str, object] = {}
    assert isinstance(fields, list)
    for code, var in fields:
        known = _FIELDS.get(code)
        if known is not None:
            if var.signature != known[1]:
                raise DBusError("nscg.dbus.Protocol", f"header field {code}: {var.signature}")
            kw[known[0]] = var.value
    if kw.pop("unix_fds", 0):
        raise DBusError("nscg.dbus.Unsupported", "a message carries unix fds")
    sig = str(kw.pop("signature", ""))
    body = _Reader(data[head_len:], order).read_all(sig) if sig else ()
    assert isinstance(mtype, int) and isinstance(serial, int) and isinstance(flags, int)
    return Message(
        mtype,
        serial,
        flags,
        signature=sig,
        body=body,
        **kw,  # type: ignore[arg-type]  # checked against _FIELDS above
    )


# ------------------------------------------------------------------ addresses
def _unescape(value: str) -> str:
    return re.sub(r"%([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), value)


def parse_address(address: str) -> list[str | bytes]:
    """Socket addresses to try, in order: a path (``str``) or an abstract name (``bytes``).

    Raises:
        DBusError: no unix transport in ``address`` (``nscg.dbus.Unsupported``).
    """
    out: list[str | bytes] = []
    kinds = []
    for entry in filter(None, address.split(";")):
        kind, _, rest = entry.partition(":")
        kinds.append(kind)
        if kind != "unix":
            continue
        keys = dict(kv.partition("=")[::2] for kv in rest.split(",") if kv)
        if "path" in keys:
            out.append(_unescape(keys["path"]))
        elif "abstract" in keys:
            out.append(b"\0" + _unescape(keys["abstract"]).encode())
    if not out:
        raise DBusError(
            "nscg.dbus.Unsupported",
            f"no unix:path= or unix:abstract= address in {address!r} (transports: {kinds})",
        )
    return out


def system_bus_address() -> str:
    """The system bus: ``$DBUS_SYSTEM_BUS_ADDRESS``, else ``/run/dbus/system_bus_socket``."""
    return os.environ.get("DBUS_SYSTEM_BUS_ADDRESS") or "unix:path=/run/dbus/system_bus_socket"


def user_bus_address() -> str:
    """The user's bus: ``$DBUS_SESSION_BUS_ADDRESS``, else ``$XDG_RUNTIME_DIR/bus``.

    Without either, ``/run/user/<euid>/bus`` (where systemd's user manager puts it).
    """
    addr = os.environ.get("DBUS_SESSION_BUS_ADDRESS")
    if addr:
        return addr
    runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.geteuid()}"
    return (
        "unix:path="
        + re.sub(r"[^A-Za-z0-9_/.\-]", lambda m: f"%{ord(m.group()):02x}", runtime)
        + "/bus"
    )


# ------------------------------------------------------------------ connection
class Connection:
    """A client connection to a message bus (use :meth:`open`).

    One call is in flight at a time (a lock); signals that match a rule added
    with :meth:`add_match` are queued until :meth:`wait_signal` takes them.
    Close it (or use it as a context manager) when done.
    """

    def __init__(self, sock: socket.socket) -> None:
        """Wrap an authenticated socket; :meth:`open` is the way to get one."""
        self._sock = sock
        self._buf = bytearray()
        self._serial = 0
        self._lock = threading.RLock()
        self._signals: collections.deque[Message] = collections.deque(maxlen=4096)
        self._replies: dict[int, Message] = {}
        self.unique_name = ""

    @classmethod
    def open(cls, address: str, *, timeout: float = 10.0) -> Connection:
        """Connect to ``address``, authenticate (SASL EXTERNAL) and say Hello.

        Raises:
            DBusError: no usable transport, authentication refused, or a protocol error.
            OSError: the socket could not be connected (e.g. FileNotFoundError).
            TimeoutError: the bus did not answer within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        last: OSError | None = None
        for target in parse_address(address):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            try:
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                sock.connect(target)
            except OSError as e:
                sock.close()
                last = e
                continue
            conn = cls(sock)
            try:
                conn._auth(deadline)
                try:
                    (name,) = conn.call(
                        _BUS, _BUS_PATH, _BUS, "Hello", timeout=deadline - time.monotonic()
                    )
                except DBusError as e:
                    if e.name != "nscg.dbus.Disconnected":
                        raise
                    raise DBusError(
                        "nscg.dbus.AuthFailed",
                        f"the bus took uid {os.geteuid()} but closed the connection at Hello "
                        "(its policy does not let this user connect)",
                    ) from None
            except BaseException:
                conn.close()
                raise
            conn.unique_name = str(name)
            return conn
        assert last is not None
        raise last

    @classmethod
    def system(cls, *, timeout: float = 10.0) -> Connection:
        """Connect to the system bus."""
        return cls.open(system_bus_address(), timeout=timeout)

    @classmethod
    def user(cls, *, timeout: float = 10.0) -> Connection:
        """Connect to the user's (session) bus."""
        return cls.open(user_bus_address(), timeout=timeout)

    # --- plumbing
    def _recv_some(self, deadline: float | None) -> None:
        if deadline is None:
            self._sock.settimeout(None)
        else:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no answer from the D-Bus peer in time")
            self._sock.settimeout(left)
        try:
            data = self._sock.recv(65536)
        except TimeoutError:
            raise TimeoutError("no answer from the D-Bus peer in time") from None
        except ConnectionResetError:
            data = b""
        if not data:
            raise DBusError("nscg.dbus.Disconnected", "the bus closed the connection")
        self._buf += data

    def _auth(self, deadline: float) -> None:
        uid = str(os.geteuid()).encode().hex()
        self._sock.sendall(b"\0AUTH EXTERNAL " + uid.encode() + b"\r\n")
        while b"\r\n" not in self._buf:
            if len(self._buf) > 4096:
                raise DBusError("nscg.dbus.Protocol", "overlong authentication line")
            self._recv_some(deadline)
        line, _, rest = bytes(self._buf).partition(b"\r\n")
        if not line.startswith(b"OK "):
            raise DBusError(
                "nscg.dbus.AuthFailed",
                f"the bus refused uid {os.geteuid()}: {line.decode(errors='replace')}",
            )
        self._buf = bytearray(rest)
        self._sock.sendall(b"BEGIN\r\n")

    def _read_message(self, deadline: float | None) -> Message:
        while len(self._buf) < 16:
            self._recv_some(deadline)
        head, body = _header_size(bytes(self._buf[:16]))
        while len(self._buf) < head + body:
            self._recv_some(deadline)
        data = bytes(self._buf[: head + body])
        del self._buf[: head + body]
        return unmarshal(data)

    def _dispatch(self, msg: Message) -> None:
        if msg.type in (METHOD_RETURN, ERROR) and msg.reply_serial is not None:
            self._replies[msg.reply_serial] = msg
        elif msg.type == SIGNAL:
            self._signals.append(msg)
        # method calls to us: nscg exports nothing; the bus answers the caller's timeout

    def send(self, msg: Message) -> None:
        """Send one message as it is (its serial must be new: see :meth:`next_serial`)."""
        data = marshal(msg)
        with self._lock:
            try:
                self._sock.sendall(data)
            except (BrokenPipeError, ConnectionResetError) as e:
                raise DBusError(
                    "nscg.dbus.Disconnected", f"the bus closed the connection: {e}"
                ) from None

    def next_serial(self) -> int:
        """A new serial number for a message sent on this connection."""
        with self._lock:
            self._serial += 1
            return self._serial

    # --- calls and signals
    def call(
        self,
        destination: str,
        path: str,
        interface: str,
        member: str,
        signature: str = "",
        *args: object,
        timeout: float | None = 25.0,
    ) -> tuple[object, ...]:
        """Call a method and return the reply's body.

        Raises:
            DBusError: an error reply (``e.name`` is the D-Bus error name).
            TimeoutError: no reply within ``timeout`` seconds (None: wait for ever).
        """
        with self._lock:
            serial = self.next_serial()
            self.send(
                Message(
                    METHOD_CALL,
                    serial,
                    path=path,
                    interface=interface,
                    member=member,
                    destination=destination,
                    signature=signature,
                    body=tuple(args),
                )
            )
            deadline = None if timeout is None else time.monotonic() + timeout
            while serial not in self._replies:
                self._dispatch(self._read_message(deadline))
            reply = self._replies.pop(serial)
        if reply.type == ERROR:
            text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
            raise DBusError(reply.error_name or "org.freedesktop.DBus.Error.Failed", text)
        return reply.body

    def add_match(self, rule: str) -> None:
        """Ask the bus for the messages that match ``rule`` (``"type='signal',..."``)."""
        self.call(_BUS, _BUS_PATH, _BUS, "AddMatch", "s", rule)

    def wait_signal(
        self, predicate: Callable[[Message], bool], timeout: float | None
    ) -> Message | None:
        """The first queued or arriving signal for which ``predicate`` is true, or None on timeout.

        Signals that do not match stay queued for later calls.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while True:
                for i, msg in enumerate(self._signals):
                    if predicate(msg):
                        del self._signals[i]
                        return msg
                try:
                    self._dispatch(self._read_message(deadline))
                except TimeoutError:
                    return None

    def drop_signals(self, predicate: Callable[[Message], bool]) -> None:
        """Forget the queued signals for which ``predicate`` is true."""
        with self._lock:
            kept = [m for m in self._signals if not predicate(m)]
            self._signals.clear()
            self._signals.extend(kept)

    def fileno(self) -> int:
        """The socket's fd (-1 once closed)."""
        return self._sock.fileno()

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self._sock.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
