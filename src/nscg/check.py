"""``nscg check``: what this host supports for sandboxes, and why not.

Every probe is read-only for the host: it reads /proc and /sys, and where a
feature can only be known by trying, it tries inside a throw-away sandbox
(its namespaces vanish with it). Nothing on the host is created or changed.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Callable

import attrs

__all__ = ["Check", "run_checks"]


@attrs.frozen
class Check:
    """One line of the report.

    Attributes:
        name: what was checked, e.g. ``"namespace net (rootless)"``.
        ok: True (works), False (does not), None (not applicable / unknown).
        detail: the value found, or why not and how to get it.
    """

    name: str
    ok: bool | None
    detail: str = ""


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _try(fn: Callable[[], str]) -> tuple[bool, str]:
    try:
        return True, fn()
    except Exception as e:  # a probe: every failure is a finding
        return False, f"{type(e).__name__}: {e}"


def _namespace_checks() -> list[Check]:
    import nscg

    out: list[Check] = []
    root = os.geteuid() == 0
    base = nscg.Container().without_rootfs().with_capabilities("inherit").with_seccomp("unconfined")
    for kind in ("user", "pid", "mount", "net", "uts", "ipc", "cgroup", "time"):
        ns = nscg.Namespace.parse(kind) | (nscg.Namespace.NONE if root else nscg.Namespace.USER)
        c = base.with_namespaces(ns)
        if kind == "time":
            c = c.with_time_offsets(monotonic=1)

        def probe(c: nscg.Container = c) -> str:
            c.run(["true"], check=True)
            return "works"

        ok, detail = _try(probe)
        out.append(
            Check(f"namespace {kind}{'' if root else ' (with a user namespace)'}", ok, detail)
        )
    return out


#: uid 65534's probe: unshare() the namespaces of a default rootless sandbox
_ROOTLESS_PROBE = (
    "import ctypes,os\n"
    "libc=ctypes.CDLL(None,use_errno=True)\n"
    "r=libc.unshare(0x10000000|0x20000000|0x00020000|0x40000000|0x04000000|0x08000000)\n"
    "print('ok' if r==0 else 'refused: '+os.strerror(ctypes.get_errno()))\n"
)
_ROOTLESS_NAME = "rootless user+pid+mount+net+uts+ipc namespaces (as uid 65534)"
_NOBODY = 65534


def _rootless_programs() -> list[list[str]]:
    """The probes to try, in order: this interpreter, the system's python3, unshare(1).

    The first one uid 65534 can run decides: this interpreter may live where that
    uid cannot go (a pyenv build under a 0700 /root), but the question is about
    the kernel, and any Python (or util-linux) can ask it.
    """
    unshare = ["unshare", "--user", "--pid", "--mount", "--net", "--uts", "--ipc", "--fork"]
    return [
        [sys.executable, "-I", "-S", "-c", _ROOTLESS_PROBE],
        ["python3", "-I", "-S", "-c", _ROOTLESS_PROBE],
        [*unshare, "true"],
    ]


def _rootless_probe(programs: list[list[str]]) -> Check:
    """Try unshare() as uid 65534 with the first of ``programs`` that uid can run.

    Returns a :class:`Check` that is True (works), False (the kernel refused, with
    its errno text) or None (could not test: no program could run, and why).
    """
    import nscg

    c = (
        nscg.Container()
        .without_rootfs()
        .with_namespaces(nscg.Namespace.NONE)
        .with_user(_NOBODY, _NOBODY, ())
        .with_capabilities("inherit")
        .with_seccomp("unconfined")
        .with_env({"PATH": "/usr/local/bin:/usr/bin:/bin", "LC_ALL": "C"})
        .with_cwd("/")
    )
    could_not: list[str] = []
    for argv in programs:
        name = os.path.basename(argv[0])
        try:
            r = c.run(argv, capture_output=True, timeout=30)
        except nscg.NscgError as e:  # not found, not executable by the uid, ...
            could_not.append(
                f"{argv[0]}: {os.strerror(e.errno) if isinstance(e, OSError) and e.errno else e}"
            )
            continue
        out = (r.stdout or b"").decode(errors="replace").strip()
        err = (r.stderr or b"").decode(errors="replace").strip()
        if r.returncode == 0 and (out == "ok" or name == "unshare"):
            return Check(_ROOTLESS_NAME, True, f"works (probed with {name})")
        if out.startswith("refused: "):
            return Check(_ROOTLESS_NAME, False, f"unshare(): {out[9:]} (probed with {name})")
        if name == "unshare" and "unshare failed" in err:
            return Check(_ROOTLESS_NAME, False, f"{err.splitlines()[-1]} (probed with unshare)")
        last = err.splitlines()[-1] if err else f"exit status {r.returncode}"
        could_not.append(f"{argv[0]}: {last}")  # it started but could not ask (no stdlib, ...)
    return Check(
        _ROOTLESS_NAME,
        None,
        f"could not test, because uid {_NOBODY} could run no probe: " + "; ".join(could_not),
    )


def _rootless_checks() -> list[Check]:
    from nscg._spawn import userns_restriction, which

    out: list[Check] = []
    why = userns_restriction()
    out.append(Check("unprivileged user namespaces (sysctls)", why is None, why or "allowed"))
    if os.geteuid() == 0:  # try it for real as uid 65534, in a throw-away process
        out.append(_rootless_probe(_rootless_programs()))
    for helper in ("newuidmap", "newgidmap"):
        path = which(helper)
        out.append(
            Check(helper, path is not None, path or "not installed (package uidmap): one id only")
        )
    return out


def _overlay_check() -> Check:
    import nscg
    from nscg import _host

    if _host.kernel_version() < (5, 11):
        return Check("overlayfs in a user namespace", False, "needs Linux >= 5.11")
    c = (
        nscg.Container()
        .without_rootfs()
        .with_capabilities("inherit")
        .with_seccomp("unconfined")
        .with_namespaces("user,mount")
    )
    script = (
        "mount -t tmpfs none /mnt && mkdir /mnt/l /mnt/u /mnt/w /mnt/m && "
        "mount -t overlay -o lowerdir=/mnt/l,upperdir=/mnt/u,workdir=/mnt/w,userxattr "
        "none /mnt/m && echo ok"
    )
    ok, detail = _try(
        lambda: (c.run(["sh", "-c", script], capture_output=True).stdout or b"").decode().strip()
    )
    works = ok and detail == "ok"
    return Check("overlayfs in a user namespace", works, "works" if works else detail or "failed")


def _cgroup_checks() -> list[Check]:
    from nscg.cgroups import CgroupMode, discover

    rep = discover()
    out = [
        Check(
            "cgroup v2 mode",
            rep.mode == CgroupMode.UNIFIED,
            f"{rep.mode.value}"
            + (
                f" (v1 holds {', '.join(sorted(rep.v1_controllers))})" if rep.v1_controllers else ""
            ),
        ),
        Check("cgroup2 mount", rep.mount_point is not None, rep.mount_point or "not mounted"),
        Check(
            "cgroup v2 controllers",
            bool(rep.root_controllers),
            " ".join(sorted(rep.root_controllers)) or "none",
        ),
        Check("own cgroup", rep.own_path is not None, rep.own_path or "unknown"),
    ]
    d = rep.delegation
    if d is not None:
        out.append(
            Check(
                "delegation of the own cgroup",
                d.ok,
                "writable"
                if d.ok
                else f"not writable by uid {d.euid} (owner {d.owner_uid}); "
                "ask for a delegated subtree (systemd: Delegate=yes)",
            )
        )
    return out


def _seccomp_checks() -> list[Check]:
    from nscg import _host

    has = _host.status_field("Seccomp") is not None
    actions = _read("/proc/sys/kernel/seccomp/actions_avail") or ""
    return [
        Check("seccomp filters", has, "available" if has else "kernel without CONFIG_SECCOMP"),
        Check("seccomp actions", bool(actions), actions or "unknown"),
    ]


def run_checks() -> list[Check]:
    """Probe this host and return the report, in a stable order.

    Returns:
        One :class:`Check` per feature.
    """
    import nscg

    f = nscg.features()
    out = [
        Check("kernel", True, f"{platform.system()} {f.kernel} {platform.machine()}"),
        Check("running as", True, f"uid {os.geteuid()}"),
        Check("clone3", f.clone3, "yes" if f.clone3 else "missing (Linux < 5.3): clone fallback"),
        Check("pidfd", f.pidfd, "yes" if f.pidfd else "missing (Linux < 5.3)"),
        Check("CLONE_INTO_CGROUP", f.clone_into_cgroup, "yes" if f.clone_into_cgroup else "no"),
    ]
    out += _namespace_checks()
    out += _rootless_checks()
    out.append(_overlay_check())
    out += _cgroup_checks()
    out += _seccomp_checks()
    return out


def render(checks: list[Check]) -> str:
    """The report as a human table."""
    width = max(len(c.name) for c in checks)
    mark = {True: "yes", False: "NO ", None: " - "}
    return "\n".join(f"{c.name:<{width}}  {mark[c.ok]}  {c.detail}" for c in checks)
