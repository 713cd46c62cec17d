"""The sandbox spec: :class:`Container`, an immutable, fluent description of a sandbox."""

from __future__ import annotations

import os
import re
import resource
from collections.abc import Iterable, Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any, Literal, TypeAlias, TypedDict, overload

import attrs

from nscg._native import ffi, lib
from nscg.errors import SpecError, UnsupportedError
from nscg.namespaces import (
    IdMap,
    Namespace,
    NamespaceRef,
    TimeOffsets,
    check_id_maps,
    in_initial_userns,
)
from nscg.rootfs import RootFS

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from nscg.capabilities import Capabilities
    from nscg.cgroups import CgroupSpec, Limits
    from nscg.images import Image, Store
    from nscg.network import Network
    from nscg.process import AnyProcess, Process, Result
    from nscg.seccomp import Seccomp

__all__ = [
    "DEFAULT_PATH",
    "DEVNULL",
    "PIPE",
    "STDOUT",
    "Container",
    "Rlimit",
    "RunOptions",
    "SpawnOptions",
    "rlimit_name",
]

#: PATH given to the payload when the caller does not pass an environment.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: The stdio markers of spawn and run: the same values as subprocess.PIPE,
#: DEVNULL and STDOUT (not imported from there: the import costs ~2 ms).
PIPE = -1
DEVNULL = -3
STDOUT = -2

#: What spawn accepts for stdin/stdout/stderr: None (inherit), PIPE, DEVNULL,
#: STDOUT (stderr only), an fd, or an object with ``fileno()``.
StdioSpec: TypeAlias = int | IO[Any] | None

#: What ``input=`` accepts in binary mode (in text mode: a ``str``).
BytesLike: TypeAlias = bytes | bytearray | memoryview


class _CallOptions(TypedDict, total=False):
    """The keyword arguments of a spawn besides those choosing text or binary mode."""

    stdin: StdioSpec
    stdout: StdioSpec
    stderr: StdioSpec
    pass_fds: Sequence[int]
    executable: str | None
    env: Mapping[str, str] | None
    cwd: str | None


class _RunCallOptions(_CallOptions, total=False):
    """The keyword arguments of a run besides those choosing text or binary mode."""

    timeout: float | None
    check: bool


class SpawnOptions(_CallOptions, total=False):
    """The keyword arguments of :meth:`Container.spawn` and :meth:`nscg.Process.exec`.

    One definition (``**options: Unpack[SpawnOptions]``) for every method that
    starts a sandbox; build a dict of them once and pass it as ``**options``.

    Attributes:
        stdin, stdout, stderr: None (inherit), ``nscg.PIPE``, ``nscg.DEVNULL``,
            ``nscg.STDOUT`` (stderr only), an fd or a file object.
        pass_fds: more fds to keep open in the payload, at the same numbers.
        executable: run this file instead of looking up ``argv[0]``.
        env: the payload's whole environment for this call (None: the spec's).
        cwd: the working directory inside for this call (None: the spec's).
        text, universal_newlines: text mode (as :mod:`subprocess`): the pipes
            are text files, output is ``str`` with universal newlines.
        encoding, errors: text mode with this codec / error handler (default:
            the locale's encoding, ``"strict"``).
    """

    text: bool | None
    encoding: str | None
    errors: str | None
    universal_newlines: bool | None


class RunOptions(SpawnOptions, total=False):
    """The keyword arguments of :meth:`Container.run` and :meth:`nscg.Process.run_inside`.

    Those of :class:`SpawnOptions`, and:

    Attributes:
        input: data for the payload's stdin (``bytes``, or ``str`` in text mode).
        capture_output: capture stdout and stderr (into the :class:`nscg.Result`).
        timeout: seconds before the whole sandbox is killed
            (:class:`nscg.TimeoutExpired`).
        check: raise :class:`nscg.CalledProcessError` on a non-zero status.
    """

    input: str | BytesLike | None
    capture_output: bool
    timeout: float | None
    check: bool


_RLIMIT_NAMES: dict[str, int] = {
    name[len("RLIMIT_") :].lower(): getattr(resource, name)
    for name in dir(resource)
    if name.startswith("RLIMIT_")
}
_RLIM_MAX = 2**64 - 1
_RLIMIT_BY_NUMBER: dict[int, str] = {}
for _name, _num in sorted(_RLIMIT_NAMES.items()):
    _RLIMIT_BY_NUMBER.setdefault(_num, f"RLIMIT_{_name.upper()}")
_CAP_SYS_RESOURCE = 24


def rlimit_name(res: int) -> str:
    """The name of a ``resource.RLIMIT_*`` number, as errors spell it: ``RLIMIT_NOFILE``."""
    return _RLIMIT_BY_NUMBER.get(res, f"rlimit {res}")


def _nr_open() -> int | None:
    """``fs.nr_open``: the kernel's ceiling for RLIMIT_NOFILE (None if unreadable)."""
    try:
        with open("/proc/sys/fs/nr_open", "rb") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def _can_raise_hard_limits(payload_in_userns: bool) -> bool:
    """Whether the payload may raise a hard limit above the caller's (``setrlimit(2)``).

    That takes CAP_SYS_RESOURCE in the initial user namespace: never inside a
    user namespace (a new or a joined one), whoever made it.
    """
    if payload_in_userns or not in_initial_userns():
        return False
    out = ffi.new("uint64_t *")
    if lib.nscg_cap_effective(out) != 0:
        return os.geteuid() == 0
    return bool(int(out[0]) >> _CAP_SYS_RESOURCE & 1)


def _show_limit(v: int) -> str:
    return "unlimited" if v == _RLIM_MAX else str(v)


def _limit_value(v: int | None) -> int:
    if v is None or v == resource.RLIM_INFINITY:
        return _RLIM_MAX
    if isinstance(v, bool) or not isinstance(v, int) or v < 0 or v > _RLIM_MAX:
        raise SpecError(
            f"an rlimit must be a non-negative integer, or None or -1 (unlimited), got {v!r}"
        )
    return v


@attrs.frozen
class Rlimit:
    """A resource limit applied to the payload (``setrlimit(2)``).

    Args:
        resource: the ``resource.RLIMIT_*`` number (or a name: ``"nofile"``).
        soft: the soft limit (None: unlimited).
        hard: the hard limit (None: unlimited). Defaults to ``soft``.
    """

    resource: int
    soft: int
    hard: int

    @classmethod
    def of(cls, res: int | str, soft: int | None, hard: int | str | None = "same") -> Rlimit:
        """Build and validate a limit; ``hard`` defaults to ``soft``.

        Raises:
            SpecError: unknown resource, negative value, or soft > hard.
        """
        if isinstance(res, str):
            key = res.lower().removeprefix("rlimit_")
            if key not in _RLIMIT_NAMES:
                raise SpecError(
                    f"unknown rlimit {res!r}; known: {', '.join(sorted(_RLIMIT_NAMES))}"
                )
            num = _RLIMIT_NAMES[key]
        else:
            if res not in _RLIMIT_NAMES.values():
                raise SpecError(f"unknown rlimit resource number {res!r}")
            num = res
        s = _limit_value(soft)
        h = s if hard == "same" else _limit_value(hard if not isinstance(hard, str) else None)
        if s > h:
            raise SpecError(
                f"{rlimit_name(num)}: soft limit {_show_limit(s)} is above the hard limit "
                f"{_show_limit(h)}"
            )
        return cls(num, s, h)


def _tuple_refs(value: Iterable[NamespaceRef]) -> tuple[NamespaceRef, ...]:
    return tuple(value)


def _tuple_rlimits(value: Iterable[Rlimit]) -> tuple[Rlimit, ...]:
    return tuple(value)


def _caps_check(_inst: object, _attr: object, value: Any) -> None:
    if isinstance(value, str) and value != "inherit":
        raise SpecError(f"capabilities must be a Capabilities, None or 'inherit', got {value!r}")


def _seccomp_check(_inst: object, _attr: object, value: Any) -> None:
    if isinstance(value, str) and value not in ("default", "unconfined"):
        raise SpecError(f"seccomp must be a Seccomp, 'default' or 'unconfined', got {value!r}")


def _ns_conv(value: Any) -> Namespace:
    return Namespace.parse(value)


def _id_maps(value: Iterable[IdMap] | None) -> tuple[IdMap, ...] | None:
    return None if value is None else tuple(value)


def _env_conv(
    value: Mapping[str, str] | Iterable[tuple[str, str]] | None,
) -> tuple[tuple[str, str], ...] | None:
    if value is None:
        return None
    items = value.items() if isinstance(value, Mapping) else value
    out = []
    for k, v in items:
        if not isinstance(k, str) or not isinstance(v, str):
            raise SpecError(f"environment entries must be str=str, got {k!r}={v!r}")
        if not k or "=" in k or "\0" in k or "\0" in v:
            raise SpecError(f"invalid environment variable name or value: {k!r}")
        out.append((k, v))
    return tuple(out)


def _text(name: str, maxlen: int) -> Any:
    def check(_inst: object, _attr: object, value: str | None) -> None:
        if value is None:
            return
        try:
            # as the kernel will get it: os.fsencode keeps undecodable bytes
            size = len(os.fsencode(value)) if isinstance(value, str) else -1
        except UnicodeEncodeError:
            size = -1
        if size < 0 or "\0" in value or size > maxlen:
            raise SpecError(f"{name} must be a string of at most {maxlen} bytes without NUL")

    return check


#: one label of a host name (RFC 1123: letters, digits, '-' inside, at most 63)
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*", re.ASCII)
#: the kernel's limit for a host or domain name (__NEW_UTS_LEN)
_UTS_LEN = 64


def _host_name(name: str) -> Any:
    """A validator: an RFC 1123 host name of at most 64 characters (or None)."""

    def check(_inst: object, _attr: object, value: str | None) -> None:
        if value is None:
            return
        if not isinstance(value, str) or not _HOST_NAME.fullmatch(value):
            raise SpecError(
                f"{name} must be an RFC 1123 host name: labels of letters, digits and '-' "
                f"(not first or last), separated by dots; got {value!r}"
            )
        if len(value) > _UTS_LEN:
            raise SpecError(
                f"{name} must be at most {_UTS_LEN} characters (the kernel's limit), "
                f"got {len(value)}: {value!r}"
            )

    return check


def _command(value: Iterable[str] | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(value)


def _opt_id(_inst: object, attribute: attrs.Attribute[Any], value: int | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**32 - 1:
        raise SpecError(f"{attribute.name} must be an id in [0, 2**32-1), got {value!r}")


_DEFAULT_ROOTFS: list[RootFS] = []


def _default_rootfs() -> RootFS:
    """``RootFS.host()``, made once (a frozen value, shared by every default spec)."""
    if not _DEFAULT_ROOTFS:
        _DEFAULT_ROOTFS.append(RootFS.host())
    return _DEFAULT_ROOTFS[0]


@attrs.frozen
class Container:
    """An immutable description of a sandbox; each ``with_*`` returns a new one.

    The default is a sandbox in new user, pid, mount, net, uts, ipc and cgroup
    namespaces, with the caller mapped to root inside (a root caller's ids
    0..65535 to an unprivileged host range instead: root inside is not root on
    the host; see :func:`nscg.namespaces.root_range`), a minimal init as pid 1,
    the hostname ``nscg``, only ``lo`` (up) as network, no capabilities,
    Docker's default seccomp profile, no new privileges, a new session, a
    minimal environment, death with the calling process, and
    :meth:`nscg.RootFS.host` as its root: the host's ``/`` read-only, a new
    ``/proc``, a minimal ``/dev`` and a private ``/tmp``, working directory
    ``/``. :meth:`without_rootfs` keeps the caller's own view of every
    filesystem instead (see there what that exposes).

    Example:
        >>> import nscg
        >>> r = nscg.Container().with_hostname("box").run(["hostname"], capture_output=True)
        >>> r.stdout
        b'box\\n'

    Attributes:
        namespaces: the namespaces to create.
        uid_map, gid_map: id maps of a new user namespace (None: the caller's
            uid/gid mapped to the ``user``/``group`` inside, root by default;
            for a root caller, ids 0..65535 to an unprivileged host range).
            ``IdMap(0, 0, 1)`` for both makes root inside host root.
        hostname: set in a new uts namespace (None: ``nscg``).
        domainname: the NIS domain name, set in a new uts namespace.
        time_offsets: offsets of a new time namespace (needs ``Namespace.TIME``).
        join: existing namespaces to enter (entered before new ones are made).
        env: the payload's environment (None: PATH, HOME and TERM only).
        cwd: the working directory inside; it must exist there (else a
            :class:`SpawnError` at ``Stage.CHDIR``). None: the caller's own, and with
            a root of its own the caller's path if it is a directory in that
            root, else ``/``.
        user, group, groups: ids to switch to inside (None: keep).
        rlimits: resource limits for the payload.
        init: run a minimal init as pid 1 that reaps orphans and forwards
            signals (only with a new pid namespace); False makes the payload pid 1.
        no_new_privs: set ``PR_SET_NO_NEW_PRIVS`` (on by default).
        die_with_parent: kill the sandbox when the calling process dies.
        new_session: start the payload in a new session (no controlling tty).
        capabilities: the payload's capability sets (None: none at all, as
            :meth:`nscg.capabilities.Capabilities.none`; ``"inherit"``: leave them
            as the kernel gives them, like subprocess does).
        seccomp: a :class:`nscg.seccomp.Seccomp` filter, ``"default"`` (Docker's
            default profile for the capabilities kept, with ``ptrace`` refused
            too) or ``"unconfined"``.
        cgroup: a cgroup v2 for each sandbox (:class:`nscg.cgroups.CgroupSpec`),
            or None.
        rootfs: the sandbox's root filesystem (a :class:`nscg.RootFS`;
            ``RootFS.host()`` by default; needs ``Namespace.MOUNT``, and
            ``Namespace.PID`` when it mounts a /proc); None keeps the caller's
            view (:meth:`without_rootfs`).
        network: a :class:`nscg.network.Network` with links to wire (None:
            loopback only); set with :meth:`with_network`. It is a
            :class:`nscg._spawn.ParentHook`: the parent sets it up while the
            child waits in its new network namespace.
        command: the argv :meth:`spawn` and :meth:`run` use when given none
            (an image's ``Entrypoint + Cmd``: :meth:`from_image`).
    """

    namespaces: Namespace = attrs.field(default=Namespace.ALL, converter=_ns_conv)
    uid_map: tuple[IdMap, ...] | None = attrs.field(default=None, converter=_id_maps)
    gid_map: tuple[IdMap, ...] | None = attrs.field(default=None, converter=_id_maps)
    hostname: str | None = attrs.field(default=None, validator=_host_name("hostname"))
    domainname: str | None = attrs.field(default=None, validator=_host_name("domainname"))
    time_offsets: TimeOffsets | None = None
    join: tuple[NamespaceRef, ...] = attrs.field(default=(), converter=_tuple_refs)
    env: tuple[tuple[str, str], ...] | None = attrs.field(default=None, converter=_env_conv)
    cwd: str | None = attrs.field(default=None, validator=_text("cwd", 4095))
    user: int | None = attrs.field(default=None, validator=_opt_id)
    group: int | None = attrs.field(default=None, validator=_opt_id)
    groups: tuple[int, ...] | None = None
    rlimits: tuple[Rlimit, ...] = attrs.field(default=(), converter=_tuple_rlimits)
    init: bool = True
    no_new_privs: bool = True
    die_with_parent: bool = True
    new_session: bool = True
    capabilities: Capabilities | Literal["inherit"] | None = attrs.field(
        default=None, validator=_caps_check
    )
    seccomp: Seccomp | Literal["default", "unconfined"] = attrs.field(
        default="default", validator=_seccomp_check
    )
    rootfs: RootFS | None = attrs.field(factory=_default_rootfs)
    cgroup: CgroupSpec | None = None
    network: Network | None = None
    command: tuple[str, ...] | None = attrs.field(default=None, converter=_command)

    # ------------------------------------------------------------ builders
    def with_namespaces(
        self, namespaces: Namespace | int | str | Iterable[str | Namespace]
    ) -> Container:
        """Create exactly these namespaces (``Namespace.NONE`` for none)."""
        return attrs.evolve(self, namespaces=Namespace.parse(namespaces))

    def without_namespaces(
        self, namespaces: Namespace | str | Iterable[str | Namespace]
    ) -> Container:
        """Create every namespace of this spec except these."""
        return attrs.evolve(self, namespaces=self.namespaces & ~Namespace.parse(namespaces))

    def with_uid_map(self, *maps: IdMap | tuple[int, int, int]) -> Container:
        """Map uids of the new user namespace: ``IdMap(inside, outside, count)`` each.

        ``with_uid_map(IdMap(0, 0, 1)).with_gid_map(IdMap(0, 0, 1))`` for a root
        caller: root is host root (the payload owns root's host files it can
        reach); the default maps a root caller's sandbox to an unprivileged range.
        """
        return attrs.evolve(
            self, uid_map=tuple(m if isinstance(m, IdMap) else IdMap(*m) for m in maps)
        )

    def with_gid_map(self, *maps: IdMap | tuple[int, int, int]) -> Container:
        """Map gids of the new user namespace: ``IdMap(inside, outside, count)`` each."""
        return attrs.evolve(
            self, gid_map=tuple(m if isinstance(m, IdMap) else IdMap(*m) for m in maps)
        )

    def with_hostname(self, hostname: str | None) -> Container:
        """Set the hostname of the new uts namespace (None: the default, ``nscg``)."""
        return attrs.evolve(self, hostname=hostname)

    def with_domainname(self, domainname: str | None) -> Container:
        """Set the NIS domain name of the new uts namespace."""
        return attrs.evolve(self, domainname=domainname)

    def with_time_offsets(self, *, monotonic: float = 0.0, boottime: float = 0.0) -> Container:
        """Create a time namespace whose monotonic/boottime clocks are shifted (seconds)."""
        return attrs.evolve(
            self,
            namespaces=self.namespaces | Namespace.TIME,
            time_offsets=TimeOffsets(monotonic=monotonic, boottime=boottime),
        )

    def with_env(self, env: Mapping[str, str] | None = None, **extra: str) -> Container:
        """Set the payload's whole environment (``None`` and no extras: the minimal default)."""
        if env is None and not extra:
            return attrs.evolve(self, env=None)
        merged = dict(env or {})
        merged.update(extra)
        return attrs.evolve(self, env=merged)

    def with_cwd(self, cwd: str | None) -> Container:
        """Set the working directory inside the sandbox (None: see ``cwd`` above)."""
        return attrs.evolve(self, cwd=cwd)

    def with_user(
        self, uid: int | None, gid: int | None = None, groups: Sequence[int] | None = None
    ) -> Container:
        """Run the payload as ``uid``/``gid`` (as seen inside) with supplementary ``groups``."""
        return attrs.evolve(
            self,
            user=uid,
            group=gid if gid is not None else uid,
            groups=None if groups is None else tuple(groups),
        )

    def with_rlimit(
        self, res: int | str, soft: int | None, hard: int | str | None = "same"
    ) -> Container:
        """Add a resource limit (``with_rlimit("nofile", 256)``), replacing one of the same kind."""
        lim = Rlimit.of(res, soft, hard)
        rest = tuple(r for r in self.rlimits if r.resource != lim.resource)
        return attrs.evolve(self, rlimits=(*rest, lim))

    def with_capabilities(self, caps: Capabilities | Literal["inherit"] | None) -> Container:
        """Give the payload these capability sets (None: none at all, the default).

        ``"inherit"`` leaves them as the kernel gives them (full inside a new user
        namespace; the caller's without one), as subprocess does.
        """
        return attrs.evolve(self, capabilities=caps)

    def with_seccomp(self, seccomp: Seccomp | Literal["default", "unconfined"]) -> Container:
        """Filter system calls: a Seccomp spec, ``"default"`` or ``"unconfined"``."""
        return attrs.evolve(self, seccomp=seccomp)

    def with_cgroup(self, limits: Limits | None = None, *, parent: str | None = None) -> Container:
        """Give each sandbox a cgroup of its own, with ``limits``, under ``parent``.

        The payload is born in it (``clone3(CLONE_INTO_CGROUP)``); it is removed
        when the sandbox ends. Needs a pure cgroup v2 host (or a delegated
        subtree); elsewhere spawning raises :class:`nscg.UnsupportedError`.
        """
        from nscg.cgroups import CgroupSpec, Limits

        return attrs.evolve(self, cgroup=CgroupSpec(limits or Limits(), parent))

    def with_limits(
        self,
        *,
        memory: int | str | None = None,
        cpus: float | None = None,
        pids: int | str | None = None,
        **more: object,
    ) -> Container:
        """Limit the sandbox through its cgroup: ``with_limits(memory="256M", cpus=0.5, pids=64)``.

        ``more`` takes any other :class:`nscg.cgroups.Limits` field
        (``memory_high``, ``memory_swap_max``, ``cpu_weight``, ``io``...). Limits
        add to (and override) those already set.

        Raises:
            SpecError: an invalid value or an unknown limit name.
        """
        from nscg.cgroups import CgroupSpec, Limits

        base = self.cgroup or CgroupSpec()
        known = {f.name for f in attrs.fields(Limits)}
        bad = set(more) - known
        if bad:
            raise SpecError(f"unknown limit(s) {sorted(bad)}; known: {sorted(known)}")
        changes: dict[str, Any] = dict(more)
        if memory is not None:
            changes["memory_max"] = memory
        if cpus is not None:
            changes["cpu_max"] = cpus
        if pids is not None:
            changes["pids_max"] = pids
        return attrs.evolve(
            self, cgroup=attrs.evolve(base, limits=attrs.evolve(base.limits, **changes))
        )

    def with_rootfs(self, rootfs: RootFS | None = None) -> Container:
        """Give the sandbox this root (None: ``RootFS.host()``, the default).

        The working directory defaults to ``/`` inside it. To keep the
        caller's view instead, use :meth:`without_rootfs`.
        """
        if rootfs is None:
            rootfs = _default_rootfs()
        return attrs.evolve(self, rootfs=rootfs)

    @classmethod
    def from_image(
        cls,
        image: Image | str | os.PathLike[str],
        *,
        writable: bool = True,
        upper: str | os.PathLike[str] | None = None,
        store: Store | None = None,
    ) -> Container:
        """A sandbox that runs an OCI or Docker image as its config says.

        The root is :meth:`RootFS.image` (layers as overlay lowers, an
        ephemeral upper unless ``upper``); the image's ``Env`` (with a default
        ``PATH``, and ``HOME`` from the image's /etc/passwd), ``WorkingDir``
        (default ``/``), ``User`` (names resolved in the image's own
        /etc/passwd and /etc/group) and ``Entrypoint + Cmd`` as
        :attr:`command`, the argv of :meth:`run` and :meth:`spawn` when they
        get none. Rootless, the user's supplementary groups are not set (one
        id is mapped). Everything else is the default Container.

        Raises:
            nscg.images.ImageError: see :meth:`RootFS.image`.
            SpecError: the image's ``User`` names a user or group its files lack.
        """
        from nscg.images._run import container_for  # tarfile and gzip only when used

        return container_for(image, base=cls(), writable=writable, upper=upper, store=store)

    def with_command(self, argv: Sequence[str] | None) -> Container:
        """Set the default argv of :meth:`run` and :meth:`spawn` (None: none)."""
        return attrs.evolve(self, command=None if argv is None else tuple(argv))

    def _argv(self, argv: Sequence[str] | None) -> Sequence[str]:
        if argv is not None:
            return argv
        if not self.command:
            raise SpecError("no argv given and the Container has no command (with_command)")
        return self.command

    def without_rootfs(self) -> Container:
        """Keep the caller's own filesystem view: no root of the sandbox's own.

        An explicit opt-out of the default ``RootFS.host()``, and a large one.
        The payload sees every mount the caller has, with the access rights of
        the host user its ids map to (the caller itself unless the id maps say
        otherwise): it can write wherever that user can write (home directory,
        /tmp, /var/tmp, a source tree), read whatever it can read (ssh keys,
        tokens, cloud and registry credentials), connect to every unix socket
        it can reach (the D-Bus buses, docker.sock, ssh and gpg agents,
        systemd's private socket) and open the host's /dev nodes. A root
        caller's payload is an unprivileged host range by default (its ids map
        there); with ``with_uid_map(IdMap(0, 0, 1))`` it is host root for all
        of that. The other layers (namespaces, no capabilities, seccomp) still
        apply. The working directory stays the caller's. Use it for trusted
        tools that need the caller's files; give untrusted code a root
        (:meth:`with_rootfs`) and bind only what it needs.
        """
        return attrs.evolve(self, rootfs=None)

    def with_network(self, network: Network | None) -> Container:
        """Choose the sandbox's network (see :mod:`nscg.network`).

        ``Network.none()`` (or None): a new network namespace with only ``lo``, the
        default. ``Network.host()``: no new network namespace, the sandbox uses the
        caller's network (an explicit opt-in). A veth or bridge network: a new
        network namespace wired by the parent before the payload starts. On a
        rootless :class:`nscg.NetworkHost` (a rootless caller's bridge), the sandbox
        joins the host's user namespace instead of making its own (a
        :class:`NamespaceRef` in :attr:`join`, closed with the spec's other refs).

        Raises:
            SpecError: ``network`` is not a Network, or (rootless host) the spec
                joins another user namespace or has its own id maps.
            UnsupportedError: a rootless veth into the caller's own namespace.
        """
        from nscg.network import Network

        if network is not None and not isinstance(network, Network):
            raise SpecError(f"with_network() takes a nscg.Network or None, got {network!r}")
        if network is None or network.kind == "none":
            return attrs.evolve(self, network=None, namespaces=self.namespaces | Namespace.NET)
        if network.kind == "host":
            return attrs.evolve(self, network=None, namespaces=self.namespaces & ~Namespace.NET)
        if network.kind == "veth" and network.peer_ns is None and os.geteuid() != 0:
            raise UnsupportedError(
                "a veth link into the caller's own network namespace needs root; "
                "rootless, put the other end in a private one: host=NetworkHost.create()",
                feature="network.veth",
            )
        spec = attrs.evolve(self, network=network, namespaces=self.namespaces | Namespace.NET)
        userns = network.userns_fd()
        if userns is None:
            return spec
        # a rootless network host: the sandbox joins its user namespace (see NetworkHost)
        if any(r.kind == Namespace.USER for r in self.join) or self.uid_map or self.gid_map:
            raise SpecError(
                "a sandbox on a rootless network host joins the host's user namespace: "
                "it cannot join another one or have its own uid/gid maps"
            )
        ref = NamespaceRef.from_fd(userns, Namespace.USER)
        return attrs.evolve(
            spec, namespaces=spec.namespaces & ~Namespace.USER, join=(*spec.join, ref)
        )

    def with_init(self, init: bool = True) -> Container:
        """Run (or not) the minimal init as pid 1 of the new pid namespace."""
        return attrs.evolve(self, init=init)

    def with_no_new_privs(self, on: bool = True) -> Container:
        """Set or clear ``no_new_privs`` (needed for seccomp without CAP_SYS_ADMIN)."""
        return attrs.evolve(self, no_new_privs=on)

    def with_die_with_parent(self, on: bool = True) -> Container:
        """Kill (or not) the sandbox when the calling process dies."""
        return attrs.evolve(self, die_with_parent=on)

    def with_new_session(self, on: bool = True) -> Container:
        """Start (or not) the payload in a new session, detached from the terminal."""
        return attrs.evolve(self, new_session=on)

    def joining(
        self,
        target: AnyProcess | int | NamespaceRef | Iterable[NamespaceRef],
        kinds: Namespace | str | None = None,
    ) -> Container:
        """Join existing namespaces: those of a process (or pid), or given references.

        Joined kinds are no longer created anew. The references stay owned by the
        returned spec's caller: close them when the spec is no longer needed.

        Args:
            target: a :class:`Process`, a pid, or namespace references.
            kinds: which kinds to join from a process/pid (default: all but those
                the caller already shares).
        """
        refs: list[NamespaceRef]
        if isinstance(target, NamespaceRef):
            refs = [target]
        elif isinstance(target, Iterable):
            refs = list(target)
        else:
            pid = target if isinstance(target, int) else target.pid
            wanted = Namespace.parse(kinds) if kinds is not None else Namespace.ALL | Namespace.TIME
            refs = []
            try:
                for k in wanted.kinds():
                    ref = NamespaceRef.of_pid(pid, k)
                    if ref.is_current():
                        ref.close()
                    else:
                        refs.append(ref)
                if any(r.kind == Namespace.MOUNT for r in refs):
                    # and its root: it may have pivoted into one of its own
                    refs.append(NamespaceRef.root_of(pid))
            except BaseException:
                for r in refs:
                    r.close()
                raise
        joined = Namespace.NONE
        for r in refs:
            joined |= r.kind
        new = self.namespaces & ~joined
        return attrs.evolve(self, join=(*self.join, *refs), namespaces=new)

    def entering(self, target: AnyProcess | int) -> Container:
        """A spec for a new process inside a running sandbox (``docker exec``).

        It joins every namespace of ``target`` and creates none; it keeps this
        spec's user, environment, working directory, limits and security settings.
        """
        base = attrs.evolve(
            self,
            namespaces=Namespace.NONE,
            join=(),
            uid_map=None,
            gid_map=None,
            hostname=None,
            domainname=None,
            time_offsets=None,
            init=False,
            rootfs=None,
            cgroup=None,
        )
        return base.joining(target)

    # -------------------------------------------------------------- checks
    def validate(self) -> None:
        """Check the rules that span several fields; raise :class:`SpecError` if broken.

        Called by :meth:`spawn` before anything runs.
        """
        ns = self.namespaces
        joined = Namespace.NONE
        for r in self.join:
            if r.closed:
                raise SpecError(f"namespace reference {r!r} is closed")
            joined |= r.kind
        if self.time_offsets is not None and not ns & Namespace.TIME:
            raise SpecError("time offsets need a new time namespace (Namespace.TIME)")
        if (self.uid_map is not None or self.gid_map is not None) and not ns & Namespace.USER:
            raise SpecError("uid/gid maps need a new user namespace (Namespace.USER)")
        if self.hostname is not None and not ns & Namespace.UTS:
            raise SpecError("setting the hostname needs a new uts namespace (Namespace.UTS)")
        if self.domainname is not None and not ns & Namespace.UTS:
            raise SpecError("setting the domain name needs a new uts namespace (Namespace.UTS)")
        if self.network is not None and not ns & Namespace.NET:
            raise SpecError(
                f"a {self.network.kind} network needs a new network namespace (Namespace.NET)"
            )
        for what, maps in (("uid_map", self.uid_map), ("gid_map", self.gid_map)):
            if maps is not None:
                if not maps:
                    raise SpecError(f"{what} is empty")
                check_id_maps(maps, what)
        if ns & Namespace.USER:
            for what, ident, maps in (
                ("user", self.user, self.uid_map),
                ("group", self.group, self.gid_map),
            ):
                if (
                    ident is not None
                    and maps is not None
                    and not any(m.contains_inside(ident) for m in maps)
                ):
                    raise SpecError(f"{what} {ident} is not mapped by the {what[0]}id map {maps}")
        if self.groups is not None:
            if len(self.groups) > 65536:
                raise SpecError("too many supplementary groups")
            for g in self.groups:
                _opt_id(None, attrs.fields(Container).group, g)
            if ns & Namespace.USER and os.geteuid() != 0 and self.groups:
                raise SpecError(
                    "supplementary groups inside a user namespace made by an unprivileged "
                    "caller are not allowed (setgroups is denied there)"
                )
        self._validate_rlimits(joined)
        self._validate_cgroup()
        if self.cwd is not None and not self.cwd.startswith("/"):
            raise SpecError(f"cwd must be an absolute path, got {self.cwd!r}")
        if ns & joined:
            raise SpecError(f"cannot both create and join {ns & joined!r}")
        if self.capabilities is not None and not isinstance(self.capabilities, str):
            self.capabilities.check_spawnable()
        if self.seccomp != "unconfined" and not self.no_new_privs:
            from nscg.capabilities import Capability

            caps = self.capabilities
            if caps is None or (
                not isinstance(caps, str) and Capability.SYS_ADMIN not in caps.effective
            ):
                raise SpecError(
                    "a seccomp filter without no_new_privs needs CAP_SYS_ADMIN in the "
                    "payload's effective set; keep no_new_privs on or unconfine seccomp"
                )
        if self.rootfs is not None:
            if not isinstance(self.rootfs, RootFS):
                raise SpecError(f"rootfs must be a nscg.RootFS, got {self.rootfs!r}")
            if not ns & Namespace.MOUNT:
                raise SpecError(
                    "a rootfs (RootFS.host() by default) needs a new mount namespace "
                    "(Namespace.MOUNT); without one, call without_rootfs() to run in the "
                    "caller's own filesystem view"
                )
            if self.rootfs.needs_proc() and not ns & Namespace.PID:
                raise SpecError(
                    "mounting proc (RootFS.host() does by default) needs a new pid namespace "
                    "(Namespace.PID) and a new mount namespace; build the RootFS with "
                    "proc=False, or call without_rootfs()"
                )
            if self.rootfs.needs_ipc() and not ns & Namespace.IPC:
                raise SpecError("mounting mqueue needs a new ipc namespace (Namespace.IPC)")

    def _validate_rlimits(self, joined: Namespace) -> None:
        """Each rlimit once; none the kernel will refuse (``fs.nr_open``, raised hard limits)."""
        seen: set[int] = set()
        can_raise: bool | None = None
        for lim in self.rlimits:
            name = rlimit_name(lim.resource)
            if lim.resource in seen:
                raise SpecError(f"{name} given twice")
            seen.add(lim.resource)
            if lim.resource == resource.RLIMIT_NOFILE:
                nr_open = _nr_open()
                if nr_open is not None and lim.hard > nr_open:
                    raise SpecError(
                        f"RLIMIT_NOFILE: hard limit {_show_limit(lim.hard)} is above the "
                        f"kernel's fs.nr_open ({nr_open}), which setrlimit refuses; "
                        f"use at most {nr_open}"
                    )
            own = resource.getrlimit(lim.resource)[1]
            own_hard = _RLIM_MAX if own == resource.RLIM_INFINITY else own
            if lim.hard <= own_hard:
                continue
            if can_raise is None:
                in_userns = bool((self.namespaces | joined) & Namespace.USER)
                can_raise = _can_raise_hard_limits(in_userns)
            if not can_raise:
                raise SpecError(
                    f"{name}: hard limit {_show_limit(lim.hard)} is above the caller's own "
                    f"({_show_limit(own_hard)}); raising a hard limit needs CAP_SYS_RESOURCE "
                    "in the initial user namespace (never inside a user namespace): use at "
                    f"most {_show_limit(own_hard)}, or raise the caller's hard limit first"
                )

    def _validate_cgroup(self) -> None:
        """Limits no sandbox can run under."""
        if self.cgroup is not None and self.cgroup.limits.pids_max == 0:
            raise SpecError(
                "pids_max=0 (pids=0): the sandbox's first process is born in its cgroup "
                "and counts there, so no sandbox could start; give at least 1 (2 with an "
                "init: it and the payload)"
            )

    # --------------------------------------------------------------- running
    @overload
    def spawn(
        self,
        argv: Sequence[str] | None = None,
        *,
        text: Literal[True],
        encoding: str | None = None,
        errors: str | None = None,
        universal_newlines: bool | None = None,
        **options: Unpack[_CallOptions],
    ) -> Process[str]: ...
    @overload
    def spawn(
        self,
        argv: Sequence[str] | None = None,
        *,
        text: bool | None = None,
        encoding: str,
        errors: str | None = None,
        universal_newlines: bool | None = None,
        **options: Unpack[_CallOptions],
    ) -> Process[str]: ...
    @overload
    def spawn(
        self,
        argv: Sequence[str] | None = None,
        *,
        text: bool | None = None,
        encoding: str | None = None,
        errors: str,
        universal_newlines: bool | None = None,
        **options: Unpack[_CallOptions],
    ) -> Process[str]: ...
    @overload
    def spawn(
        self,
        argv: Sequence[str] | None = None,
        *,
        text: bool | None = None,
        encoding: str | None = None,
        errors: str | None = None,
        universal_newlines: Literal[True],
        **options: Unpack[_CallOptions],
    ) -> Process[str]: ...
    @overload
    def spawn(
        self,
        argv: Sequence[str] | None = None,
        *,
        text: Literal[False] | None = None,
        encoding: None = None,
        errors: None = None,
        universal_newlines: Literal[False] | None = None,
        **options: Unpack[_CallOptions],
    ) -> Process[bytes]: ...
    @overload
    def spawn(
        self, argv: Sequence[str] | None = None, **options: Unpack[SpawnOptions]
    ) -> Process[str] | Process[bytes]: ...
    def spawn(
        self, argv: Sequence[str] | None = None, **options: Unpack[SpawnOptions]
    ) -> Process[str] | Process[bytes]:
        """Start ``argv`` in a new sandbox and return its :class:`Process`.

        Args:
            argv: the program and its arguments; the program is looked up on the
                sandbox's PATH unless it contains a slash. None: :attr:`command`.
            options: the keyword arguments of :class:`SpawnOptions`: ``stdin``,
                ``stdout``, ``stderr`` (None: inherit; ``nscg.PIPE``,
                ``nscg.DEVNULL``, ``nscg.STDOUT``, an fd or a file object),
                ``pass_fds``, ``executable`` (run this file instead of looking
                up ``argv[0]``), ``env`` and ``cwd`` (override the spec's for
                this call), ``text``/``universal_newlines``, ``encoding``,
                ``errors`` (text mode, as in :mod:`subprocess`: the pipes are
                text files; a ``Process[str]``).

        Raises:
            SpecError: the spec or the arguments are invalid (nothing ran).
            ExecutableNotFoundError: the program does not exist (nothing ran).
            ExecutablePermissionError: it is not an executable file (nothing ran).
            SpawnError: the child failed while setting up (stage and errno say where).
            UnsupportedError: the host lacks something the spec asks for.
        """
        from nscg._spawn import spawn

        return spawn(self, self._argv(argv), **options)

    @overload
    def run(
        self,
        argv: Sequence[str] | None = None,
        *,
        capture_output: Literal[True],
        text: Literal[True],
        encoding: str | None = None,
        errors: str | None = None,
        universal_newlines: bool | None = None,
        input: str | None = None,
        **options: Unpack[_RunCallOptions],
    ) -> Result[str]: ...
    @overload
    def run(
        self,
        argv: Sequence[str] | None = None,
        *,
        capture_output: Literal[True],
        text: bool | None = None,
        encoding: str,
        errors: str | None = None,
        universal_newlines: bool | None = None,
        input: str | None = None,
        **options: Unpack[_RunCallOptions],
    ) -> Result[str]: ...
    @overload
    def run(
        self,
        argv: Sequence[str] | None = None,
        *,
        capture_output: Literal[True],
        text: bool | None = None,
        encoding: str | None = None,
        errors: str,
        universal_newlines: bool | None = None,
        input: str | None = None,
        **options: Unpack[_RunCallOptions],
    ) -> Result[str]: ...
    @overload
    def run(
        self,
        argv: Sequence[str] | None = None,
        *,
        capture_output: Literal[True],
        text: bool | None = None,
        encoding: str | None = None,
        errors: str | None = None,
        universal_newlines: Literal[True],
        input: str | None = None,
        **options: Unpack[_RunCallOptions],
    ) -> Result[str]: ...
    @overload
    def run(
        self,
        argv: Sequence[str] | None = None,
        *,
        capture_output: bool = False,
        text: Literal[True],
        encoding: str | None = None,
        errors: str | None = None,
        universal_newlines: bool | None = None,
        input: str | None = None,
        **options: Unpack[_RunCallOptions],
    ) -> Result[str | None]: ...
    @overload
    def run(
        self,
        argv: Sequence[str] | None = None,
        *,
        capture_output: bool = False,
        text: bool | None = None,
        encoding: str,
        errors: str | None = None,
        universal_newlines: bool | None = None,
        input: str | None = None,
        **options: Unpack[_RunCallOptions],
    ) -> Result[str | None]: ...
    @overload
    def run(
        self,
        argv: Sequence[str] | None = None,
        *,
        capture_output: bool = False,
        text: bool | None = None,
        encoding: str | None = None,
        errors: str,
        universal_newlines: bool | None = None,
        input: str | None = None,
        **options: Unpack[_RunCallOptions],
    ) -> Result[str | None]: ...
    @overload
    def run(
        self,
        argv: Sequence[str] | None = None,
        *,
        capture_output: bool = False,
        text: bool | None = None,
        encoding: str | None = None,
        errors: str | None = None,
        universal_newlines: Literal[True],
        input: str | None = None,
        **options: Unpack[_RunCallOptions],
    ) -> Result[str | None]: ...
    @overload
    def run(
        self,
        argv: Sequence[str] | None = None,
        *,
        capture_output: Literal[True],
        text: Literal[False] | None = None,
        encoding: None = None,
        errors: None = None,
        universal_newlines: Literal[False] | None = None,
        input: BytesLike | None = None,
        **options: Unpack[_RunCallOptions],
    ) -> Result[bytes]: ...
    @overload
    def run(
        self,
        argv: Sequence[str] | None = None,
        *,
        capture_output: Literal[False] = False,
        text: Literal[False] | None = None,
        encoding: None = None,
        errors: None = None,
        universal_newlines: Literal[False] | None = None,
        input: BytesLike | None = None,
        **options: Unpack[_RunCallOptions],
    ) -> Result[bytes | None]: ...
    @overload
    def run(
        self, argv: Sequence[str] | None = None, **options: Unpack[RunOptions]
    ) -> Result[str | bytes | None]: ...
    def run(
        self, argv: Sequence[str] | None = None, **options: Unpack[RunOptions]
    ) -> Result[str | bytes | None]:
        """Run ``argv`` in a new sandbox to completion; like :func:`subprocess.run`.

        The result's type follows the arguments, as for :func:`subprocess.run`:
        ``capture_output=True, text=True`` gives a ``Result[str]`` (``stdout``
        and ``stderr`` are ``str``, never None), ``capture_output=True`` a
        ``Result[bytes]``, no capture a ``Result[bytes | None]``.

        On timeout (or any exception, KeyboardInterrupt included) the whole
        sandbox is killed before the exception propagates.

        Args:
            argv: as :meth:`spawn`.
            options: the keyword arguments of :class:`RunOptions`: those of
                :meth:`spawn`, and ``input`` (``bytes``, or ``str`` in text
                mode; checked before anything runs), ``capture_output``,
                ``timeout`` (seconds) and ``check``.

        Raises:
            TimeoutExpired: ``timeout`` passed; carries the partial output.
            CalledProcessError: ``check`` was set and the status is non-zero
                (its output decoded in text mode).
            SpecError, ExecutableNotFoundError, ExecutablePermissionError,
            SpawnError, UnsupportedError: as spawn.
        """
        from nscg._spawn import run

        return run(self, self._argv(argv), **options)
