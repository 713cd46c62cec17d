"""One builder vocabulary (issue 15 item 7), checked on every public spec class.

The rule (docs/container.md, "Builders"): ``with_x(value)`` replaces ``x`` (so applying
it twice with the same value is the same as once; a keyed one such as
``with_rlimit(name, ...)`` replaces the entry of that key); ``without_x()`` clears ``x``
(twice = once); verbs (``bind``, ``tmpfs``, ``add_*``, ``allow``...) append (twice is
not once). Every ``with_``/``without_`` method of the classes below must be in one of
the tables, so a new one is classified when it is added; the old names that broke the
rule still work, warn, and forward to the new verb.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from typing import Any

import pytest

import nscg
from nscg.capabilities import Capabilities
from nscg.namespaces import IdMap, Namespace
from nscg.rootfs import RootFS
from nscg.seccomp import Rule, Seccomp

Call = Callable[[Any], Any]

#: class -> a base value to build on
BASES: dict[type, Any] = {
    nscg.Container: nscg.Container(),
    RootFS: RootFS.host(),
    Seccomp: Seccomp.allow_all(),
    Capabilities: Capabilities.none().add("NET_ADMIN", "KILL"),
}

#: (class, method name) -> a call that replaces (twice == once)
REPLACES: dict[tuple[type, str], Call] = {
    (nscg.Container, "with_namespaces"): lambda c: c.with_namespaces(Namespace.PID),
    (nscg.Container, "with_uid_map"): lambda c: c.with_uid_map(IdMap(0, 100000, 10)),
    (nscg.Container, "with_gid_map"): lambda c: c.with_gid_map(IdMap(0, 100000, 10)),
    (nscg.Container, "with_hostname"): lambda c: c.with_hostname("box"),
    (nscg.Container, "with_domainname"): lambda c: c.with_domainname("example"),
    (nscg.Container, "with_time_offsets"): lambda c: c.with_time_offsets(monotonic=5.0),
    (nscg.Container, "with_env"): lambda c: c.with_env({"A": "1"}, B="2"),
    (nscg.Container, "with_cwd"): lambda c: c.with_cwd("/tmp"),
    (nscg.Container, "with_user"): lambda c: c.with_user(1000, 1000, [5]),
    (nscg.Container, "with_rlimit"): lambda c: c.with_rlimit("nofile", 64),
    (nscg.Container, "with_capabilities"): lambda c: c.with_capabilities("inherit"),
    (nscg.Container, "with_seccomp"): lambda c: c.with_seccomp("unconfined"),
    (nscg.Container, "with_cgroup"): lambda c: c.with_cgroup(),
    (nscg.Container, "with_limits"): lambda c: c.with_limits(memory="64M", pids=32),
    (nscg.Container, "with_rootfs"): lambda c: c.with_rootfs(RootFS.host(tmp=False)),
    (nscg.Container, "with_network"): lambda c: c.with_network(None),
    (nscg.Container, "with_init"): lambda c: c.with_init(False),
    (nscg.Container, "with_no_new_privs"): lambda c: c.with_no_new_privs(False),
    (nscg.Container, "with_die_with_parent"): lambda c: c.with_die_with_parent(False),
    (nscg.Container, "with_new_session"): lambda c: c.with_new_session(False),
    (nscg.Container, "with_command"): lambda c: c.with_command(["sh", "-c", "true"]),
    (RootFS, "with_readonly_root"): lambda r: r.with_readonly_root(),
    (RootFS, "with_made_dests"): lambda r: r.with_made_dests(False),
    (RootFS, "with_hidden_sockets"): lambda r: r.with_hidden_sockets(False),
    (RootFS, "with_propagation"): lambda r: r.with_propagation("slave"),
    (Seccomp, "with_default"): lambda s: s.with_default(nscg.seccomp.Action.errno(1)),
    (Seccomp, "with_unknown_action"): lambda s: s.with_unknown_action(None),
    (Seccomp, "with_arches"): lambda s: s.with_arches(),
}

#: (class, method name) -> a call that clears (twice == once)
CLEARS: dict[tuple[type, str], Call] = {
    (nscg.Container, "without_namespaces"): lambda c: c.without_namespaces("net"),
    (nscg.Container, "without_rootfs"): lambda c: c.without_rootfs(),
    (Capabilities, "without_ambient"): lambda c: c.without_ambient(),
}

#: (class, verb) -> a call that appends (twice != once)
APPENDS: dict[tuple[type, str], Call] = {
    (RootFS, "bind"): lambda r: r.bind("/usr", "/mnt/u"),
    (RootFS, "ro_bind"): lambda r: r.ro_bind("/usr", "/mnt/u"),
    (RootFS, "tmpfs"): lambda r: r.tmpfs("/mnt/t"),
    (RootFS, "proc"): lambda r: r.proc("/mnt/p"),
    (RootFS, "dev"): lambda r: r.dev("/mnt/d"),
    (RootFS, "mqueue"): lambda r: r.mqueue("/mnt/q"),
    (RootFS, "mkdir"): lambda r: r.mkdir("/mnt/m"),
    (RootFS, "mask"): lambda r: r.mask("/etc/shadow"),
    (RootFS, "readonly"): lambda r: r.readonly("/etc"),
    (RootFS, "add_docker_masks"): lambda r: r.add_docker_masks(),
    (RootFS, "add_socket_masks"): lambda r: r.add_socket_masks(["/run/x.sock"]),
    (Seccomp, "allow"): lambda s: s.allow("getpid"),
    (Seccomp, "add_rules"): lambda s: s.add_rules(Rule("getpid", nscg.seccomp.Action.ALLOW)),
    (Capabilities, "add_ambient"): lambda c: c.add_ambient("KILL"),
}

#: old name -> (class, the verb it forwards to, a call of the old name)
RENAMED: dict[tuple[type, str], tuple[str, Call]] = {
    (RootFS, "with_proc"): ("proc", lambda r: r.with_proc("/mnt/p")),
    (RootFS, "with_dev"): ("dev", lambda r: r.with_dev("/mnt/d")),
    (RootFS, "with_mqueue"): ("mqueue", lambda r: r.with_mqueue("/mnt/q")),
    (RootFS, "with_docker_masks"): ("add_docker_masks", lambda r: r.with_docker_masks()),
    (RootFS, "with_socket_masks"): (
        "add_socket_masks",
        lambda r: r.with_socket_masks(["/run/x.sock"]),
    ),
    (Seccomp, "with_rules"): (
        "add_rules",
        lambda s: s.with_rules(Rule("getpid", nscg.seccomp.Action.ALLOW)),
    ),
    (Capabilities, "with_ambient"): ("add_ambient", lambda c: c.with_ambient("KILL")),
}


def test_every_with_and_without_method_is_classified() -> None:
    for cls in BASES:
        names = {
            n
            for n, v in inspect.getmembers(cls)
            if (n.startswith("with_") or n.startswith("without_")) and callable(v)
        }
        known = {n for (c, n) in (*REPLACES, *CLEARS, *RENAMED) if c is cls}
        assert names == known, f"{cls.__name__}: classify {sorted(names - known)}"


@pytest.mark.parametrize("key", list(REPLACES), ids=lambda k: f"{k[0].__name__}.{k[1]}")
def test_with_replaces(key: tuple[type, str]) -> None:
    once = REPLACES[key](BASES[key[0]])
    assert REPLACES[key](once) == once
    assert once != BASES[key[0]] or key[1] in _DEFAULT_ALREADY


#: calls whose sample value may equal the base's own (still replace semantics)
_DEFAULT_ALREADY = {"with_network", "with_arches", "with_unknown_action"}


@pytest.mark.parametrize("key", list(CLEARS), ids=lambda k: f"{k[0].__name__}.{k[1]}")
def test_without_clears(key: tuple[type, str]) -> None:
    base = BASES[key[0]]
    if key == (Capabilities, "without_ambient"):
        base = base.add_ambient("KILL")
    once = CLEARS[key](base)
    assert once != base
    assert CLEARS[key](once) == once


def _items(value: Any) -> tuple[Any, ...]:
    """What a verb appends to: a plan's ops, a filter's rules, the ambient set."""
    if isinstance(value, RootFS):
        return value.ops
    if isinstance(value, Seccomp):
        return value.rules
    assert isinstance(value, Capabilities)
    return tuple(sorted(c.name for c in value.ambient))


@pytest.mark.parametrize("key", list(APPENDS), ids=lambda k: f"{k[0].__name__}.{k[1]}")
def test_verbs_append(key: tuple[type, str]) -> None:
    base = BASES[key[0]]
    if key[0] is Capabilities:
        base = base.add_ambient("NET_ADMIN")
    before, after = _items(base), _items(APPENDS[key](base))
    assert len(after) > len(before)
    if key[0] is Capabilities:
        assert set(before) < set(after)
    else:
        assert after[: len(before)] == before  # kept, in order; the new ones come last


@pytest.mark.parametrize("key", list(RENAMED), ids=lambda k: f"{k[0].__name__}.{k[1]}")
def test_old_names_warn_and_forward(key: tuple[type, str]) -> None:
    verb, call = RENAMED[key]
    base = BASES[key[0]]
    with pytest.warns(DeprecationWarning, match=verb):
        old = call(base)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new = APPENDS[(key[0], verb)](base)
    assert old == new


def test_bind_is_writable_and_ro_bind_read_only_as_in_bubblewrap() -> None:
    rw = RootFS().bind("/usr", "/u").ops[-1]
    ro = RootFS().ro_bind("/usr", "/u").ops[-1]
    assert isinstance(rw, nscg.rootfs.Bind) and isinstance(ro, nscg.rootfs.Bind)
    assert rw.readonly is False
    assert ro.readonly is True
    assert RootFS().bind("/usr", "/u", readonly=True) == RootFS().ro_bind("/usr", "/u")
