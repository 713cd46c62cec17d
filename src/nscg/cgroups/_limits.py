"""The limits spec: :class:`Limits` and its parts, and :class:`CgroupSpec`.

Pure values, validated at construction; :meth:`Limits.plan` turns them into the
writes a cgroup needs. Nothing here touches a cgroup.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable
from typing import Final, Literal, TypeVar

import attrs

from nscg.cgroups._fs import (
    parse_size,
)
from nscg.errors import SpecError

Bytes = int | Literal["max"]
"""A byte count, or ``"max"`` for no limit."""

_T = TypeVar("_T")


def _opt_bytes(value: int | str | None, what: str) -> Bytes | None:
    return None if value is None else parse_size(value, what=what)


def _conv_memory_max(v: int | str | None) -> Bytes | None:
    return _opt_bytes(v, "memory.max")


def _conv_memory_high(v: int | str | None) -> Bytes | None:
    return _opt_bytes(v, "memory.high")


def _conv_memory_low(v: int | str | None) -> Bytes | None:
    return _opt_bytes(v, "memory.low")


def _conv_memory_min(v: int | str | None) -> Bytes | None:
    return _opt_bytes(v, "memory.min")


def _conv_swap_max(v: int | str | None) -> Bytes | None:
    return _opt_bytes(v, "memory.swap.max")


def _conv_bps(v: int | str | None) -> Bytes | None:
    return _opt_bytes(v, "io.max bytes per second")


def _conv_hugetlb(v: int | str) -> Bytes:
    return parse_size(v, what="hugetlb max")


def _conv_count(v: int | str | None) -> int | Literal["max"] | None:
    if v is None or isinstance(v, bool):
        return None if v is None else _bad_count(v)
    if isinstance(v, int):
        return v
    if isinstance(v, str) and v.strip() == "max":
        return "max"
    if isinstance(v, str) and re.fullmatch(r"-?[0-9]+", v.strip()):
        return int(v.strip())  # a negative one: the validator says so, as for an int
    return _bad_count(v)


def _bad_count(v: object) -> int:
    raise SpecError(f"expected a non-negative integer or 'max', got {v!r}")


def _check_count(_inst: object, attr: attrs.Attribute[_T], value: _T) -> None:
    if isinstance(value, int) and value < 0:
        raise SpecError(f"{attr.name}: must not be negative, got {value}")


def _check_weight(_inst: object, attr: attrs.Attribute[_T], value: _T) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10000:
        raise SpecError(f"{attr.name}: must be an integer in 1..10000, got {value!r}")


_CPULIST_RE: Final = re.compile(r"^[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*$")


def _check_cpulist(_inst: object, attr: attrs.Attribute[_T], value: _T) -> None:
    if value is None:
        return
    if not isinstance(value, str) or not _CPULIST_RE.match(value.replace(" ", "")):
        raise SpecError(f"{attr.name}: expected a list such as '0-3,6', got {value!r}")
    for part in value.replace(" ", "").split(","):
        lo, _, hi = part.partition("-")
        if hi and int(hi) < int(lo):
            raise SpecError(f"{attr.name}: range {part!r} is backwards")


@attrs.frozen
class CpuMax:
    """A ``cpu.max`` bandwidth limit: ``quota_usec`` of CPU time per ``period_usec``.

    Use :meth:`from_cpus` for the ``cpus=0.5`` shorthand.

    Attributes:
        quota_usec: CPU time per period in microseconds, or None for no limit (``max``).
        period_usec: the period in microseconds (1000..1000000, default 100000).
    """

    __module__ = "nscg.cgroups"  # documented and pickled under its public path

    quota_usec: int | None = attrs.field()
    period_usec: int = attrs.field(default=100_000)

    @quota_usec.validator
    def _check_quota(self, _a: attrs.Attribute[int | None], v: int | None) -> None:
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1000):
            raise SpecError(f"cpu.max quota must be an integer >= 1000 µs or None, got {v!r}")

    @period_usec.validator
    def _check_period(self, _a: attrs.Attribute[int], v: int) -> None:
        if isinstance(v, bool) or not isinstance(v, int) or not 1000 <= v <= 1_000_000:
            raise SpecError(f"cpu.max period must be 1000..1000000 µs, got {v!r}")

    @classmethod
    def from_cpus(cls, cpus: float, *, period_usec: int = 100_000) -> CpuMax:
        """Build a limit of ``cpus`` CPUs' worth of time (0.5 = half of one CPU).

        Args:
            cpus: a positive number of CPUs.
            period_usec: the accounting period.

        Returns:
            The :class:`CpuMax`.

        Raises:
            SpecError: ``cpus`` is not positive or the quota would be under 1 ms.
        """
        if isinstance(cpus, bool) or not isinstance(cpus, (int, float)):
            raise SpecError(f"cpus must be a positive number, got {cpus!r}")
        if not cpus > 0:  # -5 and -5.0 (the CLI's) read the same
            raise SpecError(f"cpus must be a positive number, got {cpus:g}")
        return cls(quota_usec=max(1000, round(cpus * period_usec)), period_usec=period_usec)

    @classmethod
    def parse(cls, text: str) -> CpuMax:
        """Parse the content of a ``cpu.max`` file (``"max 100000"``, ``"50000 100000"``).

        Args:
            text: the file's content.

        Returns:
            The :class:`CpuMax`.

        Raises:
            SpecError: the text is not in that format.
        """
        parts = text.split()
        try:
            quota = None if parts[0] == "max" else int(parts[0])
            period = int(parts[1]) if len(parts) > 1 else 100_000
        except (IndexError, ValueError):
            raise SpecError(f"cannot parse cpu.max {text!r}") from None
        return cls(quota_usec=quota, period_usec=period)

    @property
    def cpus(self) -> float | None:
        """The limit as a number of CPUs, or None for no limit."""
        return None if self.quota_usec is None else self.quota_usec / self.period_usec

    def render(self) -> str:
        """The text to write to ``cpu.max``."""
        quota = "max" if self.quota_usec is None else str(self.quota_usec)
        return f"{quota} {self.period_usec}"


def _conv_cpu_max(v: CpuMax | float | str | None) -> CpuMax | None:
    if v is None or isinstance(v, CpuMax):
        return v
    if isinstance(v, str):
        return CpuMax.parse(v)
    return CpuMax.from_cpus(v)


def _check_rate(_inst: object, attr: attrs.Attribute[_T], value: _T) -> None:
    if value is None or value == "max":
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SpecError(f"io.max {attr.name}: must be a positive integer or 'max', got {value!r}")


@attrs.frozen
class IoLimit:
    """``io.max`` / ``io.weight`` for one block device, named by its path.

    The path is resolved to ``MAJ:MIN`` (``st_rdev``) when the limit is applied.

    Attributes:
        device: path of a block device, e.g. ``/dev/vda`` (a whole disk, not a partition).
        rbps: read bytes per second (accepts ``"10M"``), ``"max"`` or None.
        wbps: write bytes per second.
        riops: read operations per second.
        wiops: write operations per second.
        weight: proportional weight 1..10000 for this device (``io.weight``).
    """

    __module__ = "nscg.cgroups"  # documented and pickled under its public path

    device: str = attrs.field()
    rbps: Bytes | None = attrs.field(default=None, converter=_conv_bps)
    wbps: Bytes | None = attrs.field(default=None, converter=_conv_bps)
    riops: int | Literal["max"] | None = attrs.field(
        default=None, converter=_conv_count, validator=_check_rate
    )
    wiops: int | Literal["max"] | None = attrs.field(
        default=None, converter=_conv_count, validator=_check_rate
    )
    weight: int | None = attrs.field(default=None, validator=_check_weight)

    @device.validator
    def _check_device(self, _a: attrs.Attribute[str], v: str) -> None:
        if not isinstance(v, str) or not v.startswith("/"):
            raise SpecError(f"io limit: device must be an absolute path, got {v!r}")

    def __attrs_post_init__(self) -> None:
        if all(x is None for x in (self.rbps, self.wbps, self.riops, self.wiops, self.weight)):
            raise SpecError(
                f"io limit for {self.device}: give at least one of rbps, wbps, riops, wiops, weight"
            )

    def device_number(self) -> str:
        """Resolve :attr:`device` to ``"MAJ:MIN"``.

        Returns:
            The device number as cgroup files spell it.

        Raises:
            SpecError: the path does not exist or is not a block device.
        """
        try:
            st = os.stat(self.device)
        except OSError as e:
            raise SpecError(f"io limit: cannot stat {self.device}: {e.strerror}") from None
        if not stat.S_ISBLK(st.st_mode):
            raise SpecError(f"io limit: {self.device} is not a block device")
        return f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"

    def max_line(self, devno: str) -> str | None:
        """The ``io.max`` line for ``devno``, or None when no rate is limited."""
        items = [
            f"{k}={v}"
            for k, v in (
                ("rbps", self.rbps),
                ("wbps", self.wbps),
                ("riops", self.riops),
                ("wiops", self.wiops),
            )
            if v is not None
        ]
        return f"{devno} {' '.join(items)}" if items else None


_PAGE_RE: Final = re.compile(r"^[0-9]+[KMG]B$")


@attrs.frozen
class HugetlbLimit:
    """A ``hugetlb.<size>.max`` limit.

    Attributes:
        page_size: the huge page size as the kernel names it (``"2MB"``, ``"1GB"``).
        max: bytes of huge pages, or ``"max"``.
    """

    __module__ = "nscg.cgroups"  # documented and pickled under its public path

    page_size: str = attrs.field()
    max: Bytes = attrs.field(converter=_conv_hugetlb)

    @page_size.validator
    def _check_page(self, _a: attrs.Attribute[str], v: str) -> None:
        if not isinstance(v, str) or not _PAGE_RE.match(v):
            raise SpecError(f"hugetlb page size must look like '2MB' or '1GB', got {v!r}")


def _conv_io(v: Iterable[IoLimit]) -> tuple[IoLimit, ...]:
    out = tuple(v)
    for x in out:
        if not isinstance(x, IoLimit):
            raise SpecError(f"io: expected IoLimit values, got {x!r}")
    return out


def _conv_hugetlb_list(v: Iterable[HugetlbLimit]) -> tuple[HugetlbLimit, ...]:
    out = tuple(v)
    for x in out:
        if not isinstance(x, HugetlbLimit):
            raise SpecError(f"hugetlb: expected HugetlbLimit values, got {x!r}")
    return out


def _check_bool(_inst: object, attr: attrs.Attribute[_T], value: _T) -> None:
    if value is not None and not isinstance(value, bool):
        raise SpecError(f"{attr.name}: expected a bool, got {value!r}")


@attrs.frozen(kw_only=True)
class Limits:
    """The limits to write into a cgroup; every field is optional (None = leave as is).

    Byte values accept ``int``, ``"max"`` or strings such as ``"256M"``, ``"1G"``,
    ``"512K"``. ``cpu_max`` accepts a :class:`CpuMax`, a number of CPUs (``0.5``)
    or ``cpu.max`` text. Invalid values raise :class:`~nscg.errors.SpecError` at
    construction, before anything is written.

    Example::

        Limits(memory_max="256M", cpu_max=0.5, pids_max=64)
    """

    __module__ = "nscg.cgroups"  # documented and pickled under its public path

    memory_max: Bytes | None = attrs.field(default=None, converter=_conv_memory_max)
    memory_high: Bytes | None = attrs.field(default=None, converter=_conv_memory_high)
    memory_low: Bytes | None = attrs.field(default=None, converter=_conv_memory_low)
    memory_min: Bytes | None = attrs.field(default=None, converter=_conv_memory_min)
    memory_swap_max: Bytes | None = attrs.field(default=None, converter=_conv_swap_max)
    memory_oom_group: bool | None = attrs.field(default=None, validator=_check_bool)
    cpu_max: CpuMax | None = attrs.field(default=None, converter=_conv_cpu_max)
    cpu_weight: int | None = attrs.field(default=None, validator=_check_weight)
    cpuset_cpus: str | None = attrs.field(default=None, validator=_check_cpulist)
    cpuset_mems: str | None = attrs.field(default=None, validator=_check_cpulist)
    pids_max: int | Literal["max"] | None = attrs.field(
        default=None, converter=_conv_count, validator=_check_count
    )
    io: tuple[IoLimit, ...] = attrs.field(default=(), converter=_conv_io)
    io_weight: int | None = attrs.field(default=None, validator=_check_weight)
    hugetlb: tuple[HugetlbLimit, ...] = attrs.field(default=(), converter=_conv_hugetlb_list)

    def controllers(self) -> frozenset[str]:
        """The cgroup v2 controllers these limits need."""
        out: set[str] = set()
        if any(
            v is not None
            for v in (
                self.memory_max,
                self.memory_high,
                self.memory_low,
                self.memory_min,
                self.memory_swap_max,
                self.memory_oom_group,
            )
        ):
            out.add("memory")
        if self.cpu_max is not None or self.cpu_weight is not None:
            out.add("cpu")
        if self.cpuset_cpus is not None or self.cpuset_mems is not None:
            out.add("cpuset")
        if self.pids_max is not None:
            out.add("pids")
        if self.io or self.io_weight is not None:
            out.add("io")
        if self.hugetlb:
            out.add("hugetlb")
        return frozenset(out)

    @property
    def empty(self) -> bool:
        """True if no limit is set."""
        return not self.controllers()

    def plan(self) -> tuple[tuple[str, str], ...]:
        """The (file name, value) writes that apply these limits, in order.

        Device paths of :attr:`io` are resolved here.

        Returns:
            A tuple of writes, each one ``write(2)`` call.

        Raises:
            SpecError: an io device path is not a block device.
        """
        w: list[tuple[str, str]] = []
        if self.cpuset_cpus is not None:
            w.append(("cpuset.cpus", self.cpuset_cpus.replace(" ", "")))
        if self.cpuset_mems is not None:
            w.append(("cpuset.mems", self.cpuset_mems.replace(" ", "")))
        for fname, val in (
            ("memory.min", self.memory_min),
            ("memory.low", self.memory_low),
            ("memory.high", self.memory_high),
            ("memory.max", self.memory_max),
            ("memory.swap.max", self.memory_swap_max),
        ):
            if val is not None:
                w.append((fname, str(val)))
        if self.memory_oom_group is not None:
            w.append(("memory.oom.group", "1" if self.memory_oom_group else "0"))
        if self.cpu_max is not None:
            w.append(("cpu.max", self.cpu_max.render()))
        if self.cpu_weight is not None:
            w.append(("cpu.weight", str(self.cpu_weight)))
        if self.pids_max is not None:
            w.append(("pids.max", str(self.pids_max)))
        if self.io_weight is not None:
            w.append(("io.weight", f"default {self.io_weight}"))
        for lim in self.io:
            devno = lim.device_number()
            line = lim.max_line(devno)
            if line is not None:
                w.append(("io.max", line))
            if lim.weight is not None:
                w.append(("io.weight", f"{devno} {lim.weight}"))
        for h in self.hugetlb:
            w.append((f"hugetlb.{h.page_size}.max", str(h.max)))
        return tuple(w)


@attrs.frozen
class CgroupSpec:
    """A cgroup for each sandbox of a :class:`nscg.Container`: its limits and where.

    Attributes:
        limits: the limits written before the payload starts (it is born in the
            cgroup, with ``clone3(CLONE_INTO_CGROUP)``).
        parent: the cgroup directory to create it under (default: ``nscg/``
            under the caller's own cgroup).
    """

    __module__ = "nscg.cgroups"  # documented and pickled under its public path

    limits: Limits = attrs.field(factory=Limits)
    parent: str | None = None
