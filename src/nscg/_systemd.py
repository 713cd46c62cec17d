"""systemd's manager over D-Bus: transient units, jobs, properties (issue 18).

The calls nscg makes to place a sandbox in a cgroup that systemd delegates:
``StartTransientUnit`` (a scope with ``Delegate=yes`` under a slice), waiting
for the job's ``JobRemoved`` signal, ``StopUnit``, ``GetUnit`` and
``Properties.Get`` (``Version``, ``ControlGroup``, ``DelegateControllers``).
The system manager is on the system bus (as root); an unprivileged caller's
user manager is on its user bus (``$XDG_RUNTIME_DIR/bus``).
"""

from __future__ import annotations

from collections.abc import Sequence

from nscg._dbus import Connection, DBusError, Message, Variant

SYSTEMD = "org.freedesktop.systemd1"
MANAGER_PATH = "/org/freedesktop/systemd1"
MANAGER = "org.freedesktop.systemd1.Manager"
UNIT = "org.freedesktop.systemd1.Unit"
SCOPE = "org.freedesktop.systemd1.Scope"
PROPERTIES = "org.freedesktop.DBus.Properties"

#: a transient unit's property: (name, value with its D-Bus signature)
Property = tuple[str, Variant]


def prop(name: str, signature: str, value: object) -> Property:
    """One ``a(sv)`` entry: ``prop("Delegate", "b", True)``."""
    return (name, Variant(signature, value))


class JobFailed(DBusError):
    """A job ended with a result other than ``done`` (``failed``, ``canceled``, ...)."""

    def __init__(self, unit: str, verb: str, result: str) -> None:
        super().__init__("nscg.systemd.JobFailed", f"{verb} {unit}: job result {result!r}")
        self.unit = unit
        self.result = result


class Manager:
    """A systemd manager (system or user) reached over one D-Bus connection.

    The connection is owned: :meth:`close` closes it.
    """

    def __init__(self, conn: Connection) -> None:
        """Use ``conn``; JobRemoved signals are subscribed at once."""
        self.conn = conn
        conn.add_match(
            f"type='signal',sender='{SYSTEMD}',path='{MANAGER_PATH}',"
            f"interface='{MANAGER}',member='JobRemoved'"
        )

    @classmethod
    def system(cls, *, timeout: float = 10.0) -> Manager:
        """The system manager, on the system bus."""
        return cls(Connection.system(timeout=timeout))

    @classmethod
    def user(cls, *, timeout: float = 10.0) -> Manager:
        """The caller's user manager, on its user bus."""
        return cls(Connection.user(timeout=timeout))

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    def __enter__(self) -> Manager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- properties
    def get(self, path: str, interface: str, name: str, *, timeout: float = 25.0) -> object:
        """One property of an object (``Properties.Get``), unwrapped from its variant."""
        (v,) = self.conn.call(
            SYSTEMD, path, PROPERTIES, "Get", "ss", interface, name, timeout=timeout
        )
        assert isinstance(v, Variant)
        return v.value

    def manager_property(self, name: str) -> object:
        """A property of the manager (``Version``, ``ControlGroup``, ...)."""
        return self.get(MANAGER_PATH, MANAGER, name)

    def version(self) -> str:
        """The manager's version string (``"252.39-1~deb12u2"``)."""
        return str(self.manager_property("Version"))

    def unit_path(self, unit: str) -> str:
        """The object path of a loaded unit (``GetUnit``).

        Raises:
            DBusError: ``org.freedesktop.systemd1.NoSuchUnit`` when it is not loaded.
        """
        (path,) = self.conn.call(SYSTEMD, MANAGER_PATH, MANAGER, "GetUnit", "s", unit)
        return str(path)

    def unit_property(self, unit: str, interface: str, name: str) -> object:
        """A property of a loaded unit: ``unit_property("x.scope", SCOPE, "ControlGroup")``."""
        return self.get(self.unit_path(unit), interface, name)

    # --- jobs
    def _wait_job(self, job: str, unit: str, verb: str, timeout: float | None) -> None:
        def removed(m: Message) -> bool:
            return m.member == "JobRemoved" and len(m.body) == 4 and m.body[1] == job

        msg = self.conn.wait_signal(removed, timeout)
        if msg is None:
            raise TimeoutError(f"{verb} {unit}: job {job} did not finish in {timeout} s")
        result = str(msg.body[3])
        if result != "done":
            raise JobFailed(unit, verb, result)

    def start_transient_unit(
        self,
        name: str,
        properties: Sequence[Property],
        *,
        mode: str = "fail",
        wait: bool = True,
        timeout: float | None = 25.0,
    ) -> str:
        """Create and start a transient unit (a scope needs ``PIDs``); return the job path.

        With ``wait`` (the default), return once the job finished with ``done``.

        Raises:
            DBusError: the manager refused the unit (``e.name`` says why, e.g.
                ``org.freedesktop.systemd1.UnitExists``).
            JobFailed: the start job ended otherwise than ``done``.
            TimeoutError: no reply, or the job did not end, within ``timeout``.
        """
        (job,) = self.conn.call(
            SYSTEMD,
            MANAGER_PATH,
            MANAGER,
            "StartTransientUnit",
            "ssa(sv)a(sa(sv))",
            name,
            mode,
            list(properties),
            [],
            timeout=timeout,
        )
        job = str(job)
        if wait:
            self._wait_job(job, name, "start", timeout)
        return job

    def stop_unit(
        self, name: str, *, mode: str = "fail", wait: bool = True, timeout: float | None = 25.0
    ) -> str:
        """Stop a unit; return the job path (with ``wait``, once the job is done).

        Raises:
            DBusError: e.g. ``org.freedesktop.systemd1.NoSuchUnit``.
            JobFailed: the stop job ended otherwise than ``done``.
        """
        (job,) = self.conn.call(
            SYSTEMD, MANAGER_PATH, MANAGER, "StopUnit", "ss", name, mode, timeout=timeout
        )
        job = str(job)
        if wait:
            self._wait_job(job, name, "stop", timeout)
        return job
