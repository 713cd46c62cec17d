"""nscg._dbus against a real dbus-daemon: a private bus the test starts (no systemd).

dbus-daemon checks every message it routes (signature, padding, header fields) and
drops a client that sends a malformed one, so a signal that crosses it intact shows
that the marshalling is right in both directions.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from nscg._dbus import SIGNAL, Connection, DBusError, Message, Variant
from tests.conftest import run_as_nobody, skip_or_fail
from tests.unit.test_dbus_marshal import ALL_TYPES, ALL_VALUES

BUS = "org.freedesktop.DBus"
BUS_PATH = "/org/freedesktop/DBus"


@pytest.fixture
def bus() -> Iterator[str]:
    """The address of a private session-type dbus-daemon, killed at teardown.

    Its socket lies in a fresh directory that other uids may enter (the
    authentication test connects as uid 65534).
    """
    daemon = shutil.which("dbus-daemon")
    if daemon is None:
        skip_or_fail("dbus", "dbus-daemon is not installed (apt-get install dbus-daemon)")
    assert daemon is not None
    where = tempfile.mkdtemp(prefix="nscg-dbus-")
    os.chmod(where, 0o755)
    sock = os.path.join(where, "bus")
    p = subprocess.Popen(
        [
            daemon,
            "--session",
            "--nofork",
            "--nopidfile",
            f"--address=unix:path={sock}",
            "--print-address=1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert p.stdout is not None
        line = p.stdout.readline().decode().strip()
        assert line.startswith(f"unix:path={sock}"), line
        yield line
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(10)
        for f in (p.stdout, p.stderr):
            if f is not None:
                f.close()
        shutil.rmtree(where, ignore_errors=True)


def test_hello_and_bus_methods(bus: str) -> None:
    with Connection.open(bus) as c:
        assert c.unique_name.startswith(":1.")
        (names,) = c.call(BUS, BUS_PATH, BUS, "ListNames")
        assert isinstance(names, list) and c.unique_name in names
        (owner,) = c.call(BUS, BUS_PATH, BUS, "GetNameOwner", "s", BUS)
        assert owner == BUS
        (bus_id,) = c.call(BUS, BUS_PATH, BUS, "GetId")
        assert isinstance(bus_id, str) and len(bus_id) == 32
        assert c.call(BUS, BUS_PATH, "org.freedesktop.DBus.Peer", "Ping") == ()


def test_error_reply_is_a_dbus_error(bus: str) -> None:
    with Connection.open(bus) as c:
        with pytest.raises(DBusError) as e:
            c.call(BUS, BUS_PATH, BUS, "NoSuchMethod")
        assert e.value.name == "org.freedesktop.DBus.Error.UnknownMethod"
        assert "NoSuchMethod" in e.value.message
        with pytest.raises(DBusError) as e:
            c.call(BUS, BUS_PATH, BUS, "GetNameOwner", "s", "org.example.Nobody")
        assert e.value.name == "org.freedesktop.DBus.Error.NameHasNoOwner"
        # the connection is still usable after errors
        assert c.call(BUS, BUS_PATH, "org.freedesktop.DBus.Peer", "Ping") == ()


def test_every_type_crosses_the_daemon(bus: str) -> None:
    with Connection.open(bus) as rx, Connection.open(bus) as tx:
        rx.add_match("type='signal',interface='org.example.T'")
        big = list(range(200_000))  # ~800 KB: many recv() calls
        body = (*ALL_VALUES, big)
        tx.send(
            Message(
                SIGNAL,
                tx.next_serial(),
                path="/org/example",
                interface="org.example.T",
                member="Everything",
                signature=ALL_TYPES + "au",
                body=body,
            )
        )
        got = rx.wait_signal(lambda m: m.member == "Everything", 10)
        assert got is not None
        assert got.sender == tx.unique_name and got.path == "/org/example"
        assert got.body == body


def test_wait_signal_keeps_the_others_and_times_out(bus: str) -> None:
    with Connection.open(bus) as rx, Connection.open(bus) as tx:
        rx.add_match("type='signal',interface='org.example.T'")
        for member in ("A", "B"):
            tx.send(
                Message(
                    SIGNAL,
                    tx.next_serial(),
                    path="/o",
                    interface="org.example.T",
                    member=member,
                    signature="v",
                    body=(Variant("s", member),),
                )
            )
        b = rx.wait_signal(lambda m: m.member == "B", 10)
        assert b is not None and b.body == (Variant("s", "B"),)
        a = rx.wait_signal(lambda m: m.member == "A", 10)  # queued while waiting for B
        assert a is not None
        # (the bus's NameAcquired, sent to every new client, is queued too)
        assert rx.wait_signal(lambda m: m.interface == "org.example.T", 0.2) is None


def test_call_times_out_when_nobody_answers(bus: str) -> None:
    with Connection.open(bus) as c, Connection.open(bus) as mute:
        mute.call(BUS, BUS_PATH, BUS, "RequestName", "su", "org.example.Mute", 0)
        with pytest.raises(TimeoutError):
            c.call("org.example.Mute", "/", "org.example.Mute", "Hang", timeout=0.3)


def test_threads_share_a_connection(bus: str) -> None:
    errors: list[BaseException] = []
    with Connection.open(bus) as c:
        (expected,) = c.call(BUS, BUS_PATH, BUS, "GetId")

        def worker() -> None:
            try:
                for _ in range(50):
                    assert c.call(BUS, BUS_PATH, BUS, "GetId") == (expected,)
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors


def test_disconnect_is_reported(bus: str) -> None:
    c = Connection.open(bus)
    try:
        c.call(BUS, BUS_PATH, BUS, "GetId")
        # the daemon drops a client that sends garbage: no reply, a closed socket
        os.write(c.fileno(), b"garbage that is not a message, 32 bytes long....")
        with pytest.raises(DBusError) as e:
            c.call(BUS, BUS_PATH, BUS, "GetId", timeout=10)
        assert e.value.name in {"nscg.dbus.Disconnected", "nscg.dbus.Protocol"}
    finally:
        c.close()


def test_missing_socket_is_an_oserror(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        Connection.open(f"unix:path={tmp_path}/none")


def test_another_uid_is_refused(bus: str) -> None:
    """A session bus takes only its owner: EXTERNAL authentication as uid 65534 fails."""
    got = run_as_nobody(
        f"""
        import json
        from nscg._dbus import Connection, DBusError
        try:
            Connection.open({bus!r}, timeout=10)
            print(json.dumps(["connected"]))
        except DBusError as e:
            print(json.dumps([e.name, e.message]))
        """
    )
    assert got[0] == "nscg.dbus.AuthFailed", got
    assert "65534" in got[1]
