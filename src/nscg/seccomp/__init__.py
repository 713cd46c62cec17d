"""Seccomp filters: rules by syscall name, compiled to classic BPF in pure Python.

A :class:`Seccomp` is an immutable spec: a default :class:`Action`, a list of :class:`Rule`
(syscall name, optional argument comparisons, action) and the architectures the filter
accepts. :meth:`Seccomp.compile` turns it into the ``struct sock_filter`` array that
``seccomp(SECCOMP_SET_MODE_FILTER, ...)`` loads; no libseccomp is needed at run time.

Example::

    import errno
    from nscg.seccomp import Arg, Seccomp

    spec = (
        Seccomp.allow_all()
        .deny("ptrace", "kexec_load", errno=errno.EPERM)
        .deny("socket", when=[Arg(0).ne(1)], errno=errno.EACCES)  # only AF_UNIX sockets
    )
    program = spec.compile()            # bytes, 8 per instruction
    print(spec.disassemble())           # a seccomp-tools style listing

Semantics:

* The filter first checks ``seccomp_data.arch``: a call from an architecture the filter was
  not built for kills the process (``SECCOMP_RET_KILL_PROCESS``). On x86_64, x32 system
  calls (``nr & __X32_SYSCALL_BIT``) kill the process too; ``nr == -1`` (a syscall skipped
  by a tracer) gets the default action, as with libseccomp.
* When the default action refuses calls, syscall numbers above the highest one the filter
  knows (the architecture's table, generated from Linux 7.3, or a numeric rule) answer
  ``ENOSYS`` (:attr:`Seccomp.unknown_action`), as runc and crun do, so that C libraries fall
  back to older calls as on an older kernel.
* Rules name syscalls by name or by number (an ``int``, 0..0x7FFFFFFF).
* For one syscall, rules are tried from the most recently added to the oldest; the first
  whose comparisons all hold decides. So a later ``deny("x")`` overrides an earlier
  ``allow("x")``. Comparisons within one rule are ANDed; several rules give an OR.
* Arguments are compared as unsigned 64-bit values (both 32-bit halves are checked). On
  32-bit architectures the upper half of an argument is always 0.

The package, one concept per module: ``_spec`` (:class:`Seccomp`), ``_rules`` (actions,
comparisons, rules), ``_tables`` (architectures and the bundled syscall tables),
``_profiles`` (OCI/Docker profiles), ``_compiler`` (spec to BPF, running and listing a
program; the assembler and interpreter are in ``_bpf``), ``_support`` (what the kernel
offers) and ``_policy`` (the sandbox's default filter: what ``Container(seccomp="default")``
loads). The public names are the ones below, importable from ``nscg.seccomp``.
"""

from __future__ import annotations

from nscg.seccomp._compiler import disassemble, run_filter
from nscg.seccomp._rules import Action, ActionKind, Arg, ArgCmp, CmpOp, Rule
from nscg.seccomp._spec import Seccomp
from nscg.seccomp._support import (
    check_seccomp_supported,
    seccomp_action_available,
    seccomp_supported,
)
from nscg.seccomp._tables import (
    Arch,
    max_syscall_number,
    syscall_name,
    syscall_names,
    syscall_number,
    table_kernel_version,
)

__all__ = [
    "Action",
    "ActionKind",
    "Arch",
    "Arg",
    "ArgCmp",
    "CmpOp",
    "Rule",
    "Seccomp",
    "check_seccomp_supported",
    "disassemble",
    "max_syscall_number",
    "run_filter",
    "seccomp_action_available",
    "seccomp_supported",
    "syscall_name",
    "syscall_names",
    "syscall_number",
    "table_kernel_version",
]
