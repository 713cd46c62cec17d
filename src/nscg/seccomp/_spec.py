"""The spec: :class:`Seccomp`, a default action, rules and the architectures it accepts."""

from __future__ import annotations

import errno as _errno
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import attrs

from nscg._deprecate import renamed as _renamed
from nscg.errors import SpecError, SyscallError
from nscg.seccomp._compiler import _compile, _resolve_arch, _resolve_nr, disassemble, run_filter
from nscg.seccomp._profiles import _kernel_release, _load_oci, _norm_cap, _parse_version
from nscg.seccomp._rules import (
    _PASSING_KINDS,
    _U32,
    _X32_SYSCALL_BIT,
    Action,
    ActionKind,
    ArgCmp,
    Rule,
    _to_action,
    _to_cmps,
)
from nscg.seccomp._tables import Arch, _docker_profile, _table

# --------------------------------------------------------------------------- the spec


def _to_arches(value: Iterable[Arch | str]) -> tuple[Arch, ...]:
    if isinstance(value, (Arch, str)):
        value = (value,)
    out: list[Arch] = []
    for item in value:
        arch = Arch.parse(item)
        if arch not in out:
            out.append(arch)
    return tuple(out)


def _to_rules(value: Iterable[Rule]) -> tuple[Rule, ...]:
    out = tuple(value)
    for item in out:
        if not isinstance(item, Rule):
            raise SpecError(f"expected Rule, not {item!r}")
    return out


@attrs.frozen(cache_hash=True)
class Seccomp:
    """A seccomp filter spec: default action, rules and accepted architectures.

    Build it with a named constructor and the ``allow``/``deny``/... methods, each of which
    returns a new spec::

        Seccomp.deny_all().allow("read", "write", "exit_group")
        Seccomp.allow_all().deny("mount", "umount2", errno=errno.EPERM)
        Seccomp.docker_default(capabilities={"CAP_CHOWN", "CAP_SYS_CHROOT"})

    Attributes:
        default_action: what a syscall no rule matches gets.
        rules: the rules, oldest first (the newest matching rule of a syscall wins).
        arches: the architectures the filter accepts; empty means this machine's only.
            Calls from any other architecture kill the process.
        unknown_action: what a syscall number above the highest one the filter knows (the
            architecture's table and the numeric rules) gets, when the default action
            refuses calls (``ERRNO``, ``TRAP``, ``KILL_*``). Default ``ERRNO(ENOSYS)``, as
            runc and crun do: a C library that tries a syscall newer than the filter then
            falls back to an older one, as on an older kernel, instead of failing with
            EPERM. ``None``: such numbers get the default action. With a default that
            lets calls through (``ALLOW``, ``LOG``, ``TRACE``, ``USER_NOTIF``) it has no
            effect: the kernel answers ENOSYS for numbers it lacks anyway.
    """

    __module__ = "nscg.seccomp"  # documented and pickled under its public path

    default_action: Action = attrs.field(
        default=Action(ActionKind.ERRNO, _errno.EPERM), converter=_to_action
    )
    rules: tuple[Rule, ...] = attrs.field(default=(), converter=_to_rules)
    arches: tuple[Arch, ...] = attrs.field(default=(), converter=_to_arches)
    unknown_action: Action | None = attrs.field(
        default=Action(ActionKind.ERRNO, _errno.ENOSYS),
        converter=attrs.converters.optional(_to_action),
    )

    # ---- named constructors

    @classmethod
    def allow_all(cls) -> Seccomp:
        """A blocklist: every syscall is allowed unless a rule says otherwise.

        Returns:
            The spec.
        """
        return cls(Action.ALLOW)

    @classmethod
    def deny_all(cls, errno: int = _errno.EPERM) -> Seccomp:
        """An allowlist: every syscall fails with ``errno`` unless a rule allows it.

        Args:
            errno: the error returned by denied syscalls.

        Returns:
            The spec.

        Raises:
            SpecError: ``errno`` is out of range.
        """
        return cls(Action.errno(errno))

    @classmethod
    def kill_all(cls) -> Seccomp:
        """An allowlist whose default action kills the process.

        Returns:
            The spec.
        """
        return cls(Action.KILL_PROCESS)

    @classmethod
    def from_oci(
        cls,
        profile: Mapping[str, object] | str | os.PathLike[str],
        *,
        capabilities: Iterable[object] = (),
        arch: Arch | str | None = None,
        kernel: str | None = None,
        multiarch: bool = False,
    ) -> Seccomp:
        """Load an OCI runtime-spec / Docker seccomp profile.

        Entries are filtered as Docker does: ``includes``/``excludes`` by ``caps`` (the
        capabilities the sandbox keeps), ``arches`` (Go names: amd64, 386, arm64...) and
        ``minKernel``. Entries whose action equals the default action are dropped (libseccomp
        refuses them). Several comparisons on the same argument index become separate rules
        (ORed), as runc does; otherwise they are ANDed. Syscall names unknown to the target
        architecture are skipped.

        Args:
            profile: the parsed JSON, or the path of a JSON file.
            capabilities: the capabilities kept, as names (``"CAP_SYS_ADMIN"`` or
                ``"SYS_ADMIN"``) or enum members whose ``name`` is such a name.
            arch: the architecture the filter is for (default: this machine's).
            kernel: the kernel version for ``minKernel`` (default: the running kernel's).
            multiarch: also accept the profile's sub-architectures that nscg supports
                (i386 on x86_64), as Docker does. Off by default: native only.

        Returns:
            The spec.

        Raises:
            SpecError: the profile is malformed or uses an unknown action or operator.
            SyscallError: the file cannot be read (an :class:`OSError` and an
                :class:`~nscg.NscgError`).
        """
        if isinstance(profile, Mapping):
            data: Mapping[str, object] = profile
        else:
            try:
                text = Path(profile).read_bytes().decode()
            except OSError as exc:
                raise SyscallError(
                    exc.errno or _errno.EIO,
                    "open",
                    str(profile),
                    detail="cannot read the seccomp profile",
                ) from None
            except UnicodeDecodeError as exc:
                raise SpecError(f"seccomp profile {str(profile)!r} is not UTF-8: {exc}") from None
            try:
                loaded = json.loads(text)
            except json.JSONDecodeError as exc:
                raise SpecError(f"seccomp profile {str(profile)!r} is not JSON: {exc}") from None
            if not isinstance(loaded, dict):
                raise SpecError("a seccomp profile must be a JSON object")
            data = loaded
        return _load_oci(
            cls,
            data,
            capabilities=frozenset(_norm_cap(c) for c in capabilities),
            arch=Arch.native() if arch is None else Arch.parse(arch),
            kernel=_parse_version(kernel if kernel is not None else _kernel_release()),
            multiarch=multiarch,
        )

    @classmethod
    def docker_default(
        cls,
        capabilities: Iterable[object] = (),
        *,
        arch: Arch | str | None = None,
        kernel: str | None = None,
        multiarch: bool = False,
    ) -> Seccomp:
        """Docker's default profile (moby's ``profiles/seccomp/default.json``, bundled).

        Args:
            capabilities: the capabilities the sandbox keeps; rules gated on others are
                left out (e.g. ``mount`` needs ``CAP_SYS_ADMIN``, ``chroot``
                ``CAP_SYS_CHROOT``). Default: none, the strictest.
            arch: the architecture (default: this machine's).
            kernel: the kernel version for ``minKernel`` (default: the running kernel's).
            multiarch: also accept i386 calls on x86_64, as Docker does.

        Returns:
            The spec (default action ``ERRNO(EPERM)``).
        """
        return cls.from_oci(
            _docker_profile(),
            capabilities=capabilities,
            arch=arch,
            kernel=kernel,
            multiarch=multiarch,
        )

    # ---- immutable builders

    def with_default(self, action: Action) -> Seccomp:
        """Return a copy with another default action.

        Args:
            action: the new default.

        Returns:
            The new spec.
        """
        return attrs.evolve(self, default_action=action)

    def with_unknown_action(self, action: Action | None) -> Seccomp:
        """Return a copy answering ``action`` above the highest syscall number it knows.

        Args:
            action: the action, or None for the default action (see
                :attr:`unknown_action`).

        Returns:
            The new spec.
        """
        return attrs.evolve(self, unknown_action=action)

    def effective_unknown_action(self) -> Action | None:
        """The action numbers above the filter's highest known syscall get, if not the default.

        Returns:
            :attr:`unknown_action` when the default action refuses calls and differs from
            it; else None.
        """
        if self.unknown_action is None or self.unknown_action == self.default_action:
            return None
        if self.default_action.kind in _PASSING_KINDS:
            return None
        return self.unknown_action

    def max_known_number(self, arch: Arch | str | None = None) -> int:
        """The highest syscall number the filter knows on ``arch``.

        Args:
            arch: the architecture (default: the filter's primary one).

        Returns:
            The maximum of the architecture's table and of the numeric rules.
        """
        target = self.target_arches()[0] if arch is None else Arch.parse(arch)
        numbers = [r.syscall for r in self.rules if isinstance(r.syscall, int)]
        return max([_table(target).max_nr, *numbers])

    def skipped_syscalls(self, arch: Arch | str | None = None) -> frozenset[str]:
        """The names of optional rules that ``arch`` has no syscall for (they are left out).

        Profiles name syscalls of many architectures (``arm_fadvise64_64``,
        ``s390_runtime_instr``...) and some newer than nscg's table; like libseccomp and
        runc, nscg skips a name an architecture does not have. This is the record of what
        was skipped.

        Args:
            arch: the architecture (default: the filter's primary one).

        Returns:
            The names.
        """
        target = self.target_arches()[0] if arch is None else Arch.parse(arch)
        table = _table(target).by_name
        return frozenset(
            r.syscall for r in self.rules if isinstance(r.syscall, str) and r.syscall not in table
        )

    def with_arches(self, *arches: Arch | str) -> Seccomp:
        """Return a copy accepting these architectures (the first is the primary).

        Args:
            *arches: the architectures; none means this machine's only.

        Returns:
            The new spec.

        Raises:
            SpecError: an architecture is unsupported.
        """
        return attrs.evolve(self, arches=arches)

    def add_rules(self, *rules: Rule) -> Seccomp:
        """Return a copy with these rules appended (they take precedence over older ones).

        Args:
            *rules: the rules.

        Returns:
            The new spec.
        """
        return attrs.evolve(self, rules=self.rules + rules)

    def with_rules(self, *rules: Rule) -> Seccomp:
        """Deprecated name of :meth:`add_rules` (it appends: verbs append, ``with_x`` replaces)."""
        _renamed("Seccomp.with_rules", "Seccomp.add_rules")
        return self.add_rules(*rules)

    def add(
        self,
        action: Action,
        *syscalls: str | int,
        when: ArgCmp | Iterable[ArgCmp] = (),
        optional: bool = False,
    ) -> Seccomp:
        """Return a copy with one rule per syscall: ``action`` if all of ``when`` hold.

        Args:
            action: the action.
            *syscalls: syscall names or numbers.
            when: comparisons that must all hold (default: none, the rule always applies).
            optional: skip, instead of failing, on architectures without the syscall.

        Returns:
            The new spec.

        Raises:
            SpecError: an unknown syscall name or a bad comparison.
        """
        cmps = _to_cmps(when)
        return self.add_rules(*(Rule(name, action, cmps, optional=optional) for name in syscalls))

    def allow(
        self, *syscalls: str | int, when: ArgCmp | Iterable[ArgCmp] = (), optional: bool = False
    ) -> Seccomp:
        """Return a copy that allows these syscalls (when ``when`` holds).

        Args:
            *syscalls: syscall names or numbers.
            when: comparisons that must all hold.
            optional: skip on architectures without the syscall.

        Returns:
            The new spec.

        Raises:
            SpecError: an unknown syscall name or a bad comparison.
        """
        return self.add(Action.ALLOW, *syscalls, when=when, optional=optional)

    def deny(
        self,
        *syscalls: str | int,
        errno: int = _errno.EPERM,
        when: ArgCmp | Iterable[ArgCmp] = (),
        optional: bool = False,
    ) -> Seccomp:
        """Return a copy in which these syscalls fail with ``errno`` (when ``when`` holds).

        Args:
            *syscalls: syscall names or numbers.
            errno: the error returned, 0..4095.
            when: comparisons that must all hold.
            optional: skip on architectures without the syscall.

        Returns:
            The new spec.

        Raises:
            SpecError: an unknown syscall name, bad errno or bad comparison.
        """
        return self.add(Action.errno(errno), *syscalls, when=when, optional=optional)

    def kill(
        self,
        *syscalls: str | int,
        when: ArgCmp | Iterable[ArgCmp] = (),
        thread: bool = False,
        optional: bool = False,
    ) -> Seccomp:
        """Return a copy in which these syscalls kill the process (or only the thread).

        Args:
            *syscalls: syscall names or numbers.
            when: comparisons that must all hold.
            thread: kill only the calling thread (``KILL_THREAD``).
            optional: skip on architectures without the syscall.

        Returns:
            The new spec.

        Raises:
            SpecError: an unknown syscall name or a bad comparison.
        """
        action = Action.KILL_THREAD if thread else Action.KILL_PROCESS
        return self.add(action, *syscalls, when=when, optional=optional)

    def trap(
        self,
        *syscalls: str | int,
        data: int = 0,
        when: ArgCmp | Iterable[ArgCmp] = (),
        optional: bool = False,
    ) -> Seccomp:
        """Return a copy in which these syscalls raise SIGSYS.

        Args:
            *syscalls: syscall names or numbers.
            data: 0..65535, reported in ``si_errno``.
            when: comparisons that must all hold.
            optional: skip on architectures without the syscall.

        Returns:
            The new spec.

        Raises:
            SpecError: an unknown syscall name or a bad comparison.
        """
        return self.add(Action.trap(data), *syscalls, when=when, optional=optional)

    def log(
        self, *syscalls: str | int, when: ArgCmp | Iterable[ArgCmp] = (), optional: bool = False
    ) -> Seccomp:
        """Return a copy in which these syscalls are allowed and logged (audit log).

        Args:
            *syscalls: syscall names or numbers.
            when: comparisons that must all hold.
            optional: skip on architectures without the syscall.

        Returns:
            The new spec.

        Raises:
            SpecError: an unknown syscall name or a bad comparison.
        """
        return self.add(Action.LOG, *syscalls, when=when, optional=optional)

    # ---- compilation and inspection

    def target_arches(
        self, arch: Arch | str | Iterable[Arch | str] | None = None
    ) -> tuple[Arch, ...]:
        """The architectures a compiled filter accepts, primary first.

        Args:
            arch: override the spec's ``arches`` (one or several).

        Returns:
            The architectures.
        """
        if arch is not None:
            arches = _to_arches(arch if not isinstance(arch, (Arch, str)) else (arch,))
        else:
            arches = self.arches
        return arches or (Arch.native(),)

    def compile(self, arch: Arch | str | Iterable[Arch | str] | None = None) -> bytes:
        """Compile to a classic BPF program for ``seccomp(SECCOMP_SET_MODE_FILTER)``.

        Args:
            arch: the architecture(s) to build for (default: the spec's ``arches``, or this
                machine's).

        Returns:
            The ``struct sock_filter`` array, native byte order, 8 bytes per instruction.

        Raises:
            SpecError: a rule names a syscall none of the architectures has, or the program
                would exceed 4096 instructions.
        """
        return _compile(self, self.target_arches(arch))

    def disassemble(self, arch: Arch | str | Iterable[Arch | str] | None = None) -> str:
        """Compile and return a readable listing (as ``seccomp-tools disasm`` prints).

        Args:
            arch: as for :meth:`compile`.

        Returns:
            The listing.

        Raises:
            SpecError: as for :meth:`compile`.
        """
        arches = self.target_arches(arch)
        return disassemble(_compile(self, arches), arches[0])

    def evaluate(
        self,
        nr: int | str,
        args: Sequence[int] = (),
        arch: Arch | str | int | None = None,
    ) -> Action:
        """Run the compiled filter in nscg's BPF interpreter for one syscall.

        Args:
            nr: the syscall number, or its name (resolved for ``arch``).
            args: up to six arguments (unsigned 64-bit; missing ones are 0).
            arch: the caller's architecture (an :class:`Arch`, or a raw ``AUDIT_ARCH_*``
                value to simulate a foreign one). Default: the filter's primary arch.

        Returns:
            The action the kernel would take.

        Raises:
            SpecError: the spec does not compile, or the name is unknown on ``arch``.
        """
        arches = self.target_arches()
        return run_filter(_compile(self, arches), nr, args, arches[0] if arch is None else arch)[0]

    def action_for(
        self, nr: int | str, args: Sequence[int] = (), arch: Arch | str | int | None = None
    ) -> Action:
        """The action the spec means for one syscall, computed from the rules (no BPF).

        This is the reference semantics the compiled program must agree with.

        Args:
            nr: the syscall number or name.
            args: the arguments.
            arch: the caller's architecture (as in :meth:`evaluate`).

        Returns:
            The action.
        """
        arches = self.target_arches()
        _, target = _resolve_arch(arches[0] if arch is None else arch)
        if target is None or target not in arches:
            return Action.KILL_PROCESS
        number = _resolve_nr(nr, target)
        if target is Arch.X86_64 and _X32_SYSCALL_BIT <= number < _U32:
            return Action.KILL_PROCESS
        if target.bits == 32:
            args = [a & _U32 for a in args]
        for rule in reversed(self.rules):
            if rule.number(target) == number and rule.matches(args):
                return rule.action
        unknown = self.effective_unknown_action()
        if unknown is not None and self.max_known_number(target) < number < _U32:
            return unknown
        return self.default_action
