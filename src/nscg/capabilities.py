"""Linux capabilities: the names, the five sets, and how a sandbox gets them.

A :class:`Capabilities` spec holds the five capability sets (bounding, permitted,
effective, inheritable, ambient) that the sandbox's child installs *just before*
``execve``. What the payload then holds is decided by the kernel's ``execve``
transformation rules (``man 7 capabilities``, "Transformation of capabilities
during execve()"); :meth:`Capabilities.after_exec` computes that result, and
``docs/capabilities.md`` explains it with examples.

Two shapes cover nearly every use:

* a payload that runs as uid 0 (in its user namespace) and should hold the set
  ``K``: ``Capabilities.from_keep(K)`` — bounding = permitted = effective = ``K``,
  inheritable = ambient = empty. At ``execve`` root gets
  ``P' = bounding | inheritable | ambient = K`` and ``E' = P'``.
* a payload that runs as a non-zero uid and should still hold ``K``:
  ``Capabilities.from_keep(K, ambient=True)`` — ``K`` is also inheritable and
  ambient. Without file capabilities a non-root ``execve`` gives
  ``P' = E' = ambient``, so only ambient capabilities survive it.

**Capabilities unknown to the running kernel** are *rejected*, not dropped: the
spec itself is a pure value that can be built and checked on any machine, and
:meth:`Capabilities.check_supported` (which a container calls before it spawns)
raises :class:`~nscg.SpecError` naming each capability above
``/proc/sys/kernel/cap_last_cap``. Asking for a privilege the kernel cannot give
is a mistake worth hearing about; silently running the payload without it (as
runc and Docker do, with at most a log line) turns that mistake into a confusing
failure much later. Callers who want Docker's behaviour say so with
:meth:`Capabilities.supported_only`. :meth:`Capabilities.all` is built from the
running kernel's list, so ``Capabilities.all()`` always passes the check.

Order in which the child applies a spec (the C follows this; each step cites
``man 7 capabilities`` / ``man 2 prctl`` / ``man 2 capset``). The child starts with
a full set of capabilities in its user namespace (it is uid 0 there, or real
root without a user namespace), so every step below is allowed when it runs:

1. **Bounding set, first.** For every ``cap`` in ``0 .. last_cap`` whose bit is not
   in the bounding mask: ``prctl(PR_CAPBSET_DROP, cap)``. This needs
   ``CAP_SETPCAP`` in the *effective* set, which the child loses at step 3 (a
   uid change clears the effective set) or at step 5 (if the spec does not keep
   ``CAP_SETPCAP``), so it must come before both. Loop up to the ``last_cap``
   the parent passes in (:func:`last_cap`), not to 40: a cap newer than nscg is
   then dropped too (fail closed); ``EINVAL`` means "no such cap".
2. **Keep permitted across the uid change** (only if the target uid is not 0):
   ``prctl(PR_SET_KEEPCAPS, 1)``. Without it, switching every uid from 0 to
   non-zero clears the permitted, effective and ambient sets ("Effect of user
   ID changes on capabilities"). ``SECBIT_KEEP_CAPS`` via ``PR_SET_SECUREBITS``
   is equivalent but needs ``CAP_SETPCAP``; ``PR_SET_KEEPCAPS`` does not.
3. **Groups and gid, then uid**: ``setgroups``, ``setresgid``, ``setresuid`` (gid
   first: they need ``CAP_SETGID``, which the uid change removes from the
   effective set). The effective set is now empty if the uid became non-zero;
   the permitted set is intact thanks to step 2.
4. ``prctl(PR_SET_KEEPCAPS, 0)`` (it is cleared by ``execve`` anyway; clearing it
   here keeps the payload from inheriting a surprise).
5. **capset** with ``_LINUX_CAPABILITY_VERSION_3`` and two
   ``__user_cap_data_struct`` words: ``data[0]`` holds bits 0-31 and ``data[1]``
   bits 32-63 of effective, permitted and inheritable. The kernel checks: new
   permitted ⊆ old permitted; new effective ⊆ new permitted; new inheritable ⊆
   (old inheritable | bounding) (that is why :meth:`Capabilities.check_spawnable`
   requires inheritable ⊆ bounding — step 1 already dropped the rest). Lowering
   permitted or inheritable also lowers ambient automatically.
6. **Ambient**: ``prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)``, then
   for each cap in the ambient mask ``prctl(PR_CAP_AMBIENT,
   PR_CAP_AMBIENT_RAISE, cap, 0, 0)``. The kernel refuses (``EPERM``) a cap that
   is not in both permitted and inheritable, which step 5 guarantees
   (ambient ⊆ permitted ∩ inheritable is a validator of this class). Needs
   Linux 4.3; skip the step when the ambient mask is 0.
7. Then ``no_new_privs``, seccomp, ``execve``. Loading a seccomp filter without
   ``no_new_privs`` needs ``CAP_SYS_ADMIN`` in the effective set left by step 5.

Kernel requirements: capability sets exist on every supported kernel; ambient
capabilities need Linux 4.3; ``CAP_PERFMON`` and ``CAP_BPF`` need 5.8 and
``CAP_CHECKPOINT_RESTORE`` 5.9.
"""

from __future__ import annotations

import enum
import errno
import functools
from collections.abc import Iterable
from typing import NamedTuple, TypeAlias

import attrs

from nscg._deprecate import renamed as _renamed
from nscg.errors import SpecError, SyscallError

__all__ = [
    "Capabilities",
    "Capability",
    "CapabilityLike",
    "CapabilityMasks",
    "last_cap",
    "read_process_masks",
]


class Capability(enum.IntEnum):
    """A Linux capability; the value is the kernel's bit number (``CAP_*``).

    Member names drop the ``CAP_`` prefix: ``Capability.SYS_ADMIN`` is
    ``CAP_SYS_ADMIN`` (21). :meth:`parse` accepts every usual spelling.
    """

    CHOWN = 0
    DAC_OVERRIDE = 1
    DAC_READ_SEARCH = 2
    FOWNER = 3
    FSETID = 4
    KILL = 5
    SETGID = 6
    SETUID = 7
    SETPCAP = 8
    LINUX_IMMUTABLE = 9
    NET_BIND_SERVICE = 10
    NET_BROADCAST = 11
    NET_ADMIN = 12
    NET_RAW = 13
    IPC_LOCK = 14
    IPC_OWNER = 15
    SYS_MODULE = 16
    SYS_RAWIO = 17
    SYS_CHROOT = 18
    SYS_PTRACE = 19
    SYS_PACCT = 20
    SYS_ADMIN = 21
    SYS_BOOT = 22
    SYS_NICE = 23
    SYS_RESOURCE = 24
    SYS_TIME = 25
    SYS_TTY_CONFIG = 26
    MKNOD = 27
    LEASE = 28
    AUDIT_WRITE = 29
    AUDIT_CONTROL = 30
    SETFCAP = 31
    MAC_OVERRIDE = 32
    MAC_ADMIN = 33
    SYSLOG = 34
    WAKE_ALARM = 35
    BLOCK_SUSPEND = 36
    AUDIT_READ = 37
    PERFMON = 38
    BPF = 39
    CHECKPOINT_RESTORE = 40

    def __str__(self) -> str:
        """Return the kernel's name, e.g. ``"CAP_SYS_ADMIN"`` (same on every Python)."""
        return self.cap_name

    @property
    def cap_name(self) -> str:
        """The kernel's name of the capability, e.g. ``"CAP_SYS_ADMIN"``.

        Returns:
            ``"CAP_"`` followed by the member name.
        """
        return f"CAP_{self.name}"

    @property
    def mask(self) -> int:
        """The capability's bit in a 64-bit capability mask.

        Returns:
            ``1 << value``.
        """
        return 1 << self.value

    @classmethod
    def parse(cls, value: CapabilityLike) -> Capability:
        """Turn a name, a number or a member into a :class:`Capability`.

        Names are case-insensitive, with or without the ``CAP_`` prefix:
        ``"CAP_SYS_ADMIN"``, ``"sys_admin"`` and ``"SYS_ADMIN"`` all work.

        Args:
            value: a :class:`Capability`, its bit number, or its name.

        Returns:
            The capability.

        Raises:
            SpecError: the name or number is not a capability nscg knows.
        """
        if isinstance(value, Capability):
            return value
        if isinstance(value, bool):
            raise SpecError(f"not a capability: {value!r}")
        if isinstance(value, int):
            try:
                return cls(value)
            except ValueError:
                raise SpecError(
                    f"unknown capability number {value}: nscg knows 0..{max(cls)}"
                ) from None
        if isinstance(value, str):
            name = value.strip().upper()
            name = name.removeprefix("CAP_")
            try:
                return cls[name]
            except KeyError:
                raise SpecError(
                    f"unknown capability {value!r}: expected a name such as "
                    f"'CAP_SYS_ADMIN', 'SYS_ADMIN' or 'sys_admin'"
                ) from None
        raise SpecError(f"not a capability: {value!r}")


CapabilityLike: TypeAlias = Capability | str | int
"""Anything :meth:`Capability.parse` accepts."""


class CapabilityMasks(NamedTuple):
    """The five sets as 64-bit masks (bit ``n`` = capability ``n``), for the C child.

    The field order is the order of the C struct: bounding, permitted,
    effective, inheritable, ambient.
    """

    bounding: int
    permitted: int
    effective: int
    inheritable: int
    ambient: int


_CAP_LAST_CAP_PATH = "/proc/sys/kernel/cap_last_cap"
_PR_CAPBSET_READ = 23


def _probe_last_cap() -> int:
    """Find the highest capability by asking ``prctl(PR_CAPBSET_READ)`` (libcap's fallback)."""
    from nscg import _host

    cap = 0
    r = 0
    while cap < 64:
        r = _host.prctl(_PR_CAPBSET_READ, cap)
        if r < 0:
            break
        cap += 1
    if cap == 0:
        raise SyscallError(-r if r < 0 else errno.EINVAL, "prctl(PR_CAPBSET_READ)")
    return cap - 1


@functools.lru_cache(maxsize=1)
def last_cap() -> int:
    """Return the highest capability number the running kernel knows.

    Reads ``/proc/sys/kernel/cap_last_cap`` (Linux >= 3.2); when that file cannot
    be read (no ``/proc``), probes ``prctl(PR_CAPBSET_READ)`` instead. The value
    is cached: it cannot change while the kernel runs.

    Returns:
        The number of the last capability, e.g. 40 on Linux >= 5.9.

    Raises:
        SyscallError: neither way worked.
    """
    try:
        with open(_CAP_LAST_CAP_PATH, encoding="ascii") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return _probe_last_cap()


def _to_capset(values: Iterable[CapabilityLike]) -> frozenset[Capability]:
    """Convert an iterable of capability-likes into a frozenset (attrs converter)."""
    if isinstance(values, (str, bytes, int)):
        raise SpecError(
            f"expected a collection of capabilities, got {values!r}; wrap a single one in a list"
        )
    return frozenset(Capability.parse(v) for v in values)


def _mask(caps: Iterable[Capability]) -> int:
    """Return the 64-bit mask of a set of capabilities."""
    mask = 0
    for cap in caps:
        mask |= 1 << cap.value
    return mask


def _from_mask(mask: int, *, ignore_unknown: bool) -> frozenset[Capability]:
    """Return the capabilities whose bits are set in ``mask``."""
    if mask < 0 or mask >= 1 << 64:
        raise SpecError(f"capability mask {mask:#x} is not a 64-bit unsigned value")
    known = _mask(Capability)
    if mask & ~known and not ignore_unknown:
        raise SpecError(
            f"capability mask {mask:#018x} has bits nscg does not know: {mask & ~known:#018x}"
        )
    return frozenset(cap for cap in Capability if mask & (1 << cap.value))


def _names(caps: Iterable[Capability]) -> str:
    """Format capabilities for a message: sorted kernel names."""
    return ", ".join(c.cap_name for c in sorted(caps)) or "(none)"


def _repr_capset(caps: frozenset[Capability]) -> str:
    """Compact repr of a set for ``Capabilities.__repr__``: ``{CHOWN, KILL}``."""
    return "{" + ", ".join(c.name for c in sorted(caps)) + "}"


def _check_subsets(instance: Capabilities, attribute: object, value: object) -> None:
    """Validate the invariants the kernel keeps for every thread."""
    del attribute, value
    if not instance.effective <= instance.permitted:
        raise SpecError(
            "effective capabilities must also be permitted; not permitted: "
            + _names(instance.effective - instance.permitted)
        )
    both = instance.permitted & instance.inheritable
    if not instance.ambient <= both:
        raise SpecError(
            "ambient capabilities must be both permitted and inheritable "
            "(man 7 capabilities: 'Ambient capability set'); missing for: "
            + _names(instance.ambient - both)
            + " — use Capabilities.add_ambient(), which adds them to both"
        )


_DOCKER_DEFAULT: frozenset[Capability] = frozenset(
    {
        Capability.CHOWN,
        Capability.DAC_OVERRIDE,
        Capability.FSETID,
        Capability.FOWNER,
        Capability.MKNOD,
        Capability.NET_RAW,
        Capability.SETGID,
        Capability.SETUID,
        Capability.SETFCAP,
        Capability.SETPCAP,
        Capability.NET_BIND_SERVICE,
        Capability.SYS_CHROOT,
        Capability.KILL,
        Capability.AUDIT_WRITE,
    }
)

_EMPTY: frozenset[Capability] = frozenset()


@attrs.frozen
class Capabilities:
    """The five capability sets a sandboxed process gets before ``execve``.

    Each set is a ``frozenset`` of :class:`Capability`; the constructor also
    accepts any iterable of names or numbers. The kernel's invariants are
    checked at construction: effective ⊆ permitted, and ambient ⊆ permitted ∩
    inheritable. Checks that depend on how the spec is used
    (:meth:`check_spawnable`) or on the running kernel (:meth:`check_supported`)
    are separate methods, so a spec stays a pure value.

    Prefer the named constructors (:meth:`none`, :meth:`all`,
    :meth:`docker_default`, :meth:`from_keep`) and the methods that return
    changed copies (:meth:`drop`, :meth:`keep`, :meth:`add`,
    :meth:`add_ambient`).

    Attributes:
        bounding: the limit on what ``execve`` can ever grant (``CapBnd``).
        permitted: what the process may make effective (``CapPrm``).
        effective: what the kernel checks permissions against (``CapEff``).
        inheritable: what survives ``execve`` of a program with matching file
            inheritable capabilities, and the pool for ambient (``CapInh``).
        ambient: what survives ``execve`` of an unprivileged program; needs
            Linux >= 4.3 (``CapAmb``).

    Raises:
        SpecError: a name is unknown, or an invariant above is broken.
    """

    bounding: frozenset[Capability] = attrs.field(
        default=_EMPTY, converter=_to_capset, repr=_repr_capset
    )
    permitted: frozenset[Capability] = attrs.field(
        default=_EMPTY, converter=_to_capset, repr=_repr_capset
    )
    effective: frozenset[Capability] = attrs.field(
        default=_EMPTY, converter=_to_capset, repr=_repr_capset
    )
    inheritable: frozenset[Capability] = attrs.field(
        default=_EMPTY, converter=_to_capset, repr=_repr_capset
    )
    ambient: frozenset[Capability] = attrs.field(
        default=_EMPTY, converter=_to_capset, validator=_check_subsets, repr=_repr_capset
    )

    # -- named constructors -------------------------------------------------

    @classmethod
    def none(cls) -> Capabilities:
        """Return a spec that leaves the process no capability at all.

        Returns:
            All five sets empty. Root in the sandbox is then an ordinary user
            as far as the kernel's capability checks go.
        """
        return cls()

    @classmethod
    def all(cls, *, last: int | None = None) -> Capabilities:
        """Return a spec that keeps every capability the running kernel knows.

        The inheritable and ambient sets stay empty (see :meth:`from_keep`).

        Args:
            last: the highest capability number to include; by default the
                running kernel's (:func:`last_cap`).

        Returns:
            bounding = permitted = effective = every capability up to ``last``.
        """
        limit = last_cap() if last is None else last
        return cls.from_keep(cap for cap in Capability if cap <= limit)

    @classmethod
    def docker_default(cls) -> Capabilities:
        """Return the 14 capabilities Docker keeps for a container by default.

        ``CHOWN, DAC_OVERRIDE, FSETID, FOWNER, MKNOD, NET_RAW, SETGID, SETUID,
        SETFCAP, SETPCAP, NET_BIND_SERVICE, SYS_CHROOT, KILL, AUDIT_WRITE``, kept
        as :meth:`from_keep` does (for a payload running as root).

        Returns:
            The spec.
        """
        return cls.from_keep(_DOCKER_DEFAULT)

    @classmethod
    def from_keep(cls, keep: Iterable[CapabilityLike], *, ambient: bool = False) -> Capabilities:
        """Return a spec in which the payload holds exactly ``keep``.

        With ``ambient=False`` (for a payload that runs as uid 0): bounding =
        permitted = effective = ``keep``, inheritable = ambient = empty. With
        ``ambient=True`` (for a payload that runs as a non-zero uid, which only
        keeps ambient capabilities across ``execve``): ``keep`` is also
        inheritable and ambient.

        Args:
            keep: the capabilities to keep.
            ambient: also make them inheritable and ambient.

        Returns:
            The spec.

        Raises:
            SpecError: a name is unknown.
        """
        caps = _to_capset(keep)
        extra = caps if ambient else _EMPTY
        return cls(bounding=caps, permitted=caps, effective=caps, inheritable=extra, ambient=extra)

    @classmethod
    def from_masks(cls, masks: CapabilityMasks, *, ignore_unknown: bool = False) -> Capabilities:
        """Build a spec from five 64-bit masks (the inverse of :meth:`to_masks`).

        Args:
            masks: the masks.
            ignore_unknown: drop bits nscg has no :class:`Capability` for
                (capabilities of a kernel newer than nscg) instead of failing.

        Returns:
            The spec.

        Raises:
            SpecError: a mask has an unknown bit (and ``ignore_unknown`` is
                false), or the sets break an invariant.
        """
        return cls(
            bounding=_from_mask(masks.bounding, ignore_unknown=ignore_unknown),
            permitted=_from_mask(masks.permitted, ignore_unknown=ignore_unknown),
            effective=_from_mask(masks.effective, ignore_unknown=ignore_unknown),
            inheritable=_from_mask(masks.inheritable, ignore_unknown=ignore_unknown),
            ambient=_from_mask(masks.ambient, ignore_unknown=ignore_unknown),
        )

    @classmethod
    def of_process(cls, pid: int | str = "self") -> Capabilities:
        """Read the capability sets of a running process from ``/proc/PID/status``.

        Bits for capabilities newer than nscg are left out; use
        :func:`read_process_masks` for the exact masks. No privilege is needed
        to read another process's sets.

        Args:
            pid: a process id, or ``"self"`` (also ``"thread-self"``).

        Returns:
            The process's five sets (only the kernel invariants are checked:
            a running process need not satisfy :meth:`check_spawnable`).

        Raises:
            SyscallError: the status file cannot be read (no such process).
        """
        return cls.from_masks(read_process_masks(pid), ignore_unknown=True)

    # -- changed copies -------------------------------------------------------

    def drop(self, *caps: CapabilityLike) -> Capabilities:
        """Return a copy with ``caps`` removed from all five sets.

        Args:
            *caps: capabilities to remove.

        Returns:
            The new spec.

        Raises:
            SpecError: a name is unknown.
        """
        gone = _to_capset(caps)
        return Capabilities(
            bounding=self.bounding - gone,
            permitted=self.permitted - gone,
            effective=self.effective - gone,
            inheritable=self.inheritable - gone,
            ambient=self.ambient - gone,
        )

    def keep(self, *caps: CapabilityLike) -> Capabilities:
        """Return a copy in which every set is cut down to ``caps``.

        Args:
            *caps: capabilities to keep where they are already present; every
                other capability is removed from all five sets.

        Returns:
            The new spec.

        Raises:
            SpecError: a name is unknown.
        """
        kept = _to_capset(caps)
        return Capabilities(
            bounding=self.bounding & kept,
            permitted=self.permitted & kept,
            effective=self.effective & kept,
            inheritable=self.inheritable & kept,
            ambient=self.ambient & kept,
        )

    def add(self, *caps: CapabilityLike) -> Capabilities:
        """Return a copy with ``caps`` added to bounding, permitted and effective.

        This is Docker's ``--cap-add`` for a payload running as root. For a
        non-root payload, follow it with :meth:`add_ambient`.

        Args:
            *caps: capabilities to add.

        Returns:
            The new spec.

        Raises:
            SpecError: a name is unknown.
        """
        more = _to_capset(caps)
        return attrs.evolve(
            self,
            bounding=self.bounding | more,
            permitted=self.permitted | more,
            effective=self.effective | more,
        )

    def add_ambient(self, *caps: CapabilityLike) -> Capabilities:
        """Return a copy in which ``caps`` are also inheritable and ambient.

        Ambient capabilities are how a process that runs as a non-zero uid keeps
        capabilities across ``execve`` (Linux >= 4.3).

        Args:
            *caps: capabilities to make ambient; each must already be permitted.

        Returns:
            The new spec.

        Raises:
            SpecError: a name is unknown, or a capability is not permitted
                (add it first with :meth:`add`).
        """
        more = _to_capset(caps)
        missing = more - self.permitted
        if missing:
            raise SpecError(
                "a capability must be permitted before it can be ambient; not permitted: "
                + _names(missing)
                + " — add it with Capabilities.add() first"
            )
        return attrs.evolve(self, inheritable=self.inheritable | more, ambient=self.ambient | more)

    def with_ambient(self, *caps: CapabilityLike) -> Capabilities:
        """Deprecated name of :meth:`add_ambient` (it appends, and ``with_x`` replaces)."""
        _renamed("Capabilities.with_ambient", "Capabilities.add_ambient")
        return self.add_ambient(*caps)

    def without_ambient(self) -> Capabilities:
        """Return a copy with empty inheritable and ambient sets.

        Returns:
            The new spec.
        """
        return attrs.evolve(self, inheritable=_EMPTY, ambient=_EMPTY)

    def supported_only(self, *, last: int | None = None) -> Capabilities:
        """Return a copy without the capabilities the running kernel lacks.

        This is Docker's and runc's behaviour, as an explicit choice; by default
        nscg rejects such capabilities (:meth:`check_supported`).

        Args:
            last: the highest capability number to keep; by default the running
                kernel's (:func:`last_cap`).

        Returns:
            The new spec.
        """
        limit = last_cap() if last is None else last
        return self.keep(*(cap for cap in Capability if cap <= limit))

    # -- checks and conversions ---------------------------------------------------

    def unsupported(self, *, last: int | None = None) -> frozenset[Capability]:
        """Return the capabilities of this spec that the running kernel lacks.

        Args:
            last: the highest capability number the kernel knows; by default
                the running kernel's (:func:`last_cap`).

        Returns:
            The capabilities numbered above ``last``, in any set.
        """
        limit = last_cap() if last is None else last
        every = self.bounding | self.permitted | self.inheritable
        return frozenset(cap for cap in every if cap > limit)

    def check_supported(self, *, last: int | None = None) -> None:
        """Check that the running kernel knows every capability of this spec.

        Args:
            last: the highest capability number the kernel knows; by default
                the running kernel's (:func:`last_cap`).

        Raises:
            SpecError: a capability is newer than the kernel; the message names
                it and suggests :meth:`supported_only`.
        """
        limit = last_cap() if last is None else last
        missing = self.unsupported(last=limit)
        if missing:
            raise SpecError(
                f"this kernel knows capabilities 0..{limit} only "
                f"(/proc/sys/kernel/cap_last_cap); asked for: {_names(missing)} — "
                "remove them, or use Capabilities.supported_only() to drop them silently"
            )

    def check_spawnable(self, *, last: int | None = None) -> None:
        """Check everything a spawn needs beyond the kernel's invariants.

        * the running kernel knows every capability (:meth:`check_supported`);
        * inheritable ⊆ bounding: ``capset(2)`` refuses new inheritable
          capabilities outside the bounding set;
        * permitted ⊆ bounding: a capability that is permitted but not in the
          bounding set is lost by a root payload at ``execve`` (and would be
          kept by a non-root one only through ambient), so such a spec does
          not say what the payload holds.

        Args:
            last: the highest capability number the kernel knows; by default
                the running kernel's (:func:`last_cap`).

        Raises:
            SpecError: a check failed; the message names the capabilities.
        """
        outside = (self.permitted | self.inheritable) - self.bounding
        if outside:
            raise SpecError(
                "permitted and inheritable capabilities must also be in the bounding set; "
                f"not in it: {_names(outside)}"
            )
        self.check_supported(last=last)

    def after_exec(self, *, root: bool) -> Capabilities:
        """Compute the sets the payload has after ``execve``.

        Applies the rules of ``man 7 capabilities`` for a program without file
        capabilities and without set-user-ID/set-group-ID bits, with the
        default securebits:

        * ``root`` (uid 0 in its user namespace): P' = bounding | inheritable |
          ambient, E' = P';
        * otherwise: P' = E' = ambient.

        Inheritable, ambient and bounding are unchanged in both cases.

        Args:
            root: whether the payload's real or effective uid is 0.

        Returns:
            The payload's sets.
        """
        if root:
            permitted = self.bounding | self.inheritable | self.ambient
            effective = permitted
        else:
            permitted = self.ambient
            effective = self.ambient
        return attrs.evolve(self, permitted=permitted, effective=effective)

    def to_masks(self) -> CapabilityMasks:
        """Return the five sets as 64-bit masks for the C child.

        Returns:
            ``(bounding, permitted, effective, inheritable, ambient)``; bit ``n``
            is set when capability ``n`` is in the set.
        """
        return CapabilityMasks(
            bounding=_mask(self.bounding),
            permitted=_mask(self.permitted),
            effective=_mask(self.effective),
            inheritable=_mask(self.inheritable),
            ambient=_mask(self.ambient),
        )


_STATUS_FIELDS = {
    "CapBnd": "bounding",
    "CapPrm": "permitted",
    "CapEff": "effective",
    "CapInh": "inheritable",
    "CapAmb": "ambient",
}


def _parse_status(text: str) -> CapabilityMasks:
    """Parse the ``Cap*`` lines of a ``/proc/PID/status`` text.

    Args:
        text: the file's contents.

    Returns:
        The five masks. ``CapAmb`` is 0 when absent (Linux < 4.3).

    Raises:
        SpecError: a ``Cap*`` line other than ``CapAmb`` is missing or not hex.
    """
    found: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key in _STATUS_FIELDS:
            try:
                found[_STATUS_FIELDS[key]] = int(value.strip(), 16)
            except ValueError:
                raise SpecError(f"malformed capability line in status: {line!r}") from None
    found.setdefault("ambient", 0)
    missing = [k for k, v in _STATUS_FIELDS.items() if v not in found]
    if missing:
        raise SpecError(f"status has no {', '.join(missing)} line")
    return CapabilityMasks(**found)


def read_process_masks(pid: int | str = "self") -> CapabilityMasks:
    """Read the exact capability masks of a process from ``/proc/PID/status``.

    Args:
        pid: a process id, or ``"self"`` / ``"thread-self"``.

    Returns:
        The five masks, including bits nscg has no name for.

    Raises:
        SyscallError: the file cannot be read (for example the process is gone).
        SpecError: ``pid`` is not a pid, ``"self"`` or ``"thread-self"``.
    """
    if isinstance(pid, bool) or (not isinstance(pid, int) and pid not in ("self", "thread-self")):
        raise SpecError(f"not a pid: {pid!r}")
    if isinstance(pid, int) and pid <= 0:
        raise SpecError(f"not a pid: {pid!r}")
    path = f"/proc/{pid}/status"
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            text = f.read()
    except OSError as exc:
        raise SyscallError(exc.errno or errno.EIO, "open", path) from exc
    return _parse_status(text)
