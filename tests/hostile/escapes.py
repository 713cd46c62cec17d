"""Escape attempts against the default profile, runnable as root or as an unprivileged uid.

:func:`run_all` sets up the host side of every attempt (a leaked fd and cwd, a
host process holding a secret, a listener, a terminal), runs the ``escape``
probe (``probes/escape.c``) and a shell payload in
``Container().with_rootfs(RootFS.host())``, and returns ``{attempt: lines}``.
A line starting with ``ESCAPED`` is a success of the attacker. It imports
nothing from pytest, so :func:`tests.conftest.run_as_nobody` can run it as
uid 65534: ``python -c 'from tests.hostile.escapes import main; main(DIR)'``.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import termios
import time
import tty
from collections.abc import Callable, Iterator

import nscg
from nscg import Container, RootFS

HERE = os.path.dirname(os.path.abspath(__file__))
Lines = list[str]

#: the x86_64 numbers of unshare(2) through the x32 ABI and through int $0x80
X32_UNSHARE = 272
I386_UNSHARE = 310


def default() -> Container:
    """The default profile the escape tests attack."""
    return Container().with_rootfs(RootFS.host())


def build_probe(directory: str) -> str:
    """Compile ``probes/escape.c`` into ``directory`` (world-readable); return its path."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise FileNotFoundError("no C compiler")
    exe = os.path.join(directory, "escape")
    src = os.path.join(HERE, "probes", "escape.c")
    subprocess.run([cc, "-O1", "-o", exe, src], check=True)
    os.chmod(exe, 0o755)
    return exe


def lines_of(r: nscg.Result) -> Lines:
    """The probe's verdict lines, plus how it ended."""
    out = (r.stdout or b"").decode(errors="replace").splitlines()
    if r.returncode == -signal.SIGSYS:
        out.append("blocked: killed by SIGSYS (seccomp)")
    elif r.returncode not in (0, 3):
        out.append(f"exit {r.returncode}: {(r.stderr or b'').decode(errors='replace')[-300:]}")
    return out


def run(c: Container, argv: list[str], **kw: object) -> Lines:
    r = c.run(argv, capture_output=True, timeout=60, **kw)  # type: ignore[call-overload]  # kw: each caller's RunOptions
    return lines_of(r)


@contextlib.contextmanager
def host_process(token: str) -> Iterator[subprocess.Popen[bytes]]:
    """A host process with ``token`` in its environment and command line."""
    p = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(300)", token],
        env={"PATH": "/usr/bin:/bin", token: "secret"},
    )
    try:
        yield p
    finally:
        p.kill()
        p.wait()


def attempt_fds(exe: str) -> Lines:
    """runc CVE-2024-21626: a host directory fd and the cwd left open into the child."""
    d = tempfile.mkdtemp(prefix="nscg-hostile-cwd-")  # on the host's /tmp: hidden inside
    with open(os.path.join(d, "secret"), "w") as f:
        f.write("host secret\n")
    fds = [os.open(d, os.O_RDONLY | os.O_DIRECTORY), os.open(d, os.O_PATH)]
    for fd in fds:
        os.set_inheritable(fd, True)
    old = os.getcwd()
    os.chdir(d)
    try:
        out = run(default(), [exe, "fds", "secret"])
        # and with the cwd asked for explicitly: still inside the root
        out += run(default().with_cwd("/tmp"), [exe, "fds", "secret"])
    finally:
        os.chdir(old)
        for fd in fds:
            os.close(fd)
        shutil.rmtree(d)
    return out


def attempt_exe(exe: str) -> Lines:
    """CVE-2019-5736: the runtime's binary through /proc/PID/exe, also while a sibling joins."""
    out = run(default(), [exe, "exe"])
    # the payload watches for processes the host spawns into its namespaces
    # (``Container.entering``: "docker exec") and tries each one's exe
    with default().spawn([exe, "exewatch", "4"], stdout=subprocess.PIPE) as p:
        time.sleep(0.3)
        joiner = Container().entering(p)
        try:
            for _ in range(30):
                joiner.run(["true"], timeout=30)
        finally:
            for ref in joiner.join:
                ref.close()
        stdout, _ = p.communicate(timeout=60)
    out += (stdout or b"").decode().splitlines()
    return out


def attempt_ptrace_kill(exe: str, token: str) -> tuple[Lines, Lines]:
    with host_process(token) as p:
        pt = run(default(), [exe, "ptrace", str(p.pid)])
        pt += run(default(), [exe, "ptrace", "1"])
        kl = run(default(), [exe, "kill", str(p.pid)])
        time.sleep(0.1)
        kl.append(
            "ESCAPED host process was killed"
            if p.poll() is not None
            else "blocked host process: still alive"
        )
    return pt, kl


def attempt_ns(exe: str) -> Lines:
    kinds = ("user", "mnt", "pid", "net", "uts", "ipc", "cgroup")
    args = [f"{k}:{os.stat(f'/proc/self/ns/{k}').st_ino}" for k in kinds]
    return run(default(), [exe, "ns", *args])


def _tty_payload(exe: str, holder: bool) -> Lines:
    master, slave = pty.openpty()
    tty.setraw(slave)
    p = None
    try:
        if holder:  # the pty is the controlling terminal of a host session (a shell)
            p = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    "import os, time; os.close(os.open(os.ttyname(0), os.O_RDWR));"
                    "print('ready', flush=True); time.sleep(120)",
                ],
                stdin=slave,
                stdout=subprocess.PIPE,
                start_new_session=True,
            )
            assert p.stdout is not None
            p.stdout.readline()
        r = default().run([exe, "tty"], stdin=slave, capture_output=True, timeout=60)
        out = lines_of(r)
        termios.tcdrain(slave)
        os.set_blocking(slave, False)
        try:
            injected = os.read(slave, 4096)
        except BlockingIOError:
            injected = b""
        what = "host session's terminal" if holder else "inherited pty"
        out.append(
            f"ESCAPED input injected into the {what}: {injected!r}"
            if injected
            else f"blocked injection into the {what}: nothing queued"
        )
        return out
    finally:
        if p is not None:
            p.kill()
            p.wait()
            if p.stdout:
                p.stdout.close()
        os.close(master)
        os.close(slave)


def attempt_tty(exe: str) -> Lines:
    """TIOCSTI / TIOCLINUX on an inherited terminal (bubblewrap CVE-2017-5226)."""
    return _tty_payload(exe, holder=True) + _tty_payload(exe, holder=False)


def attempt_abi(exe: str) -> Lines:
    """unshare(CLONE_NEWUSER) through the x32 and i386 entry points."""
    if os.uname().machine != "x86_64":
        return ["blocked x32/i386: not x86_64"]
    c = default().with_init(False)
    return run(c, [exe, "x32", str(X32_UNSHARE)]) + run(c, [exe, "i386", str(I386_UNSHARE)])


#: copies of the probe made by root: setuid root, file capabilities without and with
#: the effective bit (setcap(8) arguments)
PRIVILEGED_COPIES: dict[str, str | None] = {
    "escape-suid": None,
    "escape-fcaps": "cap_sys_admin,cap_setuid,cap_dac_override+ip",
    "escape-fcaps-e": "cap_sys_admin,cap_setuid,cap_dac_override+eip",
}


def make_privileged_copies(probe_dir: str) -> list[str]:
    """As root: the setuid and file-capability copies of ``escape``; returns the missing."""
    exe = os.path.join(probe_dir, "escape")
    missing = []
    for name, caps in PRIVILEGED_COPIES.items():
        path = os.path.join(probe_dir, name)
        shutil.copy(exe, path)
        if caps is None:
            os.chown(path, 0, 0)
            os.chmod(path, 0o4755)
        elif shutil.which("setcap") is None:
            os.unlink(path)
            missing.append(name)
        else:
            subprocess.run(["setcap", caps, path], check=True)
    return missing


def attempt_privileged_exec(probe_dir: str) -> Lines:
    """Setuid-root and file-capability copies of the probe (made by root beforehand)."""
    out: Lines = []
    for name in PRIVILEGED_COPIES:
        path = os.path.join(probe_dir, name)
        if not os.path.exists(path):
            out.append(f"missing {name}")
            continue
        try:
            out += [f"{name}: {ln}" for ln in run(default(), [path, "creds"])]
        except nscg.SpawnError as e:
            # the kernel refuses to run a binary whose effective file
            # capabilities it cannot grant: fail closed
            out.append(f"blocked {name}: {e}")
    return out


def attempt_cgroup(exe: str) -> Lines:
    return run(default(), [exe, "cgroup"])


def attempt_secrets(exe: str, token: str) -> Lines:
    """Host secrets through /proc and /sys, with a host process holding one."""
    os.environ[token] = "secret"
    try:
        with host_process(token):
            return run(default(), [exe, "secrets", token[::-1]])  # not in its own cmdline
    finally:
        del os.environ[token]


def attempt_host_root(exe: str) -> Lines:
    """The host root after pivot_root: "/..", /proc/1/root, chroot, open_by_handle_at."""
    out = run(default(), [exe, "root"])
    d = tempfile.mkdtemp(prefix="nscg-hostile-handle-")  # host /tmp: hidden inside
    try:
        path = os.path.join(d, "secret")
        with open(path, "w") as f:
            f.write("host secret\n")
        h = subprocess.run([exe, "gethandle", path], capture_output=True, check=False)
        if h.returncode == 0:
            out += run(default(), [exe, "handle", h.stdout.decode().strip()])
        else:
            out.append(f"blocked open_by_handle_at: no handle on the host ({h.stderr!r})")
    finally:
        shutil.rmtree(d)
    return out


def attempt_mknod(exe: str) -> Lines:
    return run(default(), [exe, "mknod"])


def attempt_rlimit(exe: str) -> Lines:
    return run(default(), [exe, "rlimit"]) + run(
        default().with_rlimit("nofile", 64, 64).with_rlimit("nproc", 4096, 4096),
        [exe, "rlimit"],
    )


def _host_ipv4() -> list[str]:
    addrs = {"127.0.0.1"}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        r = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, check=False)
        for line in r.stdout.decode().splitlines():
            parts = line.split()
            if "inet" in parts:
                addrs.add(parts[parts.index("inet") + 1].split("/")[0])
    return sorted(addrs)


def attempt_network(exe: str) -> Lines:
    """A listener on the host's addresses and an abstract unix socket."""
    out: Lines = []
    with socket.socket() as srv, socket.socket(socket.AF_UNIX) as usrv:
        srv.bind(("0.0.0.0", 0))
        srv.listen(8)
        port = srv.getsockname()[1]
        name = f"nscg-hostile-{secrets.token_hex(6)}"
        usrv.bind("\0" + name)
        usrv.listen(8)
        for ip in _host_ipv4():
            out += run(default(), [exe, "connect", ip, str(port)])
        out += run(default(), [exe, "unix", name])
    return out


SHELL_PAYLOAD = r"""
e() { echo "ESCAPED $*"; }
b() { echo "blocked $*"; }
touch /etc/nscg-hostile 2>/dev/null && e "wrote /etc" || b "write /etc"
mount -t tmpfs none /mnt 2>/dev/null && e "mount" || b "mount"
mount -o remount,rw / 2>/dev/null && e "remount rw" || b "remount rw"
cat /proc/*/environ 2>/dev/null | grep -qa NSCG_HOST_SECRET && e "environ" || b "environ"
echo $$ > /sys/fs/cgroup/unified/cgroup.procs 2>/dev/null && e "cgroup.procs" || b "cgroup.procs"
ls /proc | grep -qx "$HOSTPID" && e "host pid visible" || b "host pid hidden"
hostname evil 2>/dev/null && e "hostname" || b "hostname"
ip link add x type dummy 2>/dev/null && e "ip link add" || b "ip link add"
unshare -U -r true 2>/dev/null && e "unshare -U" || b "unshare -U"
nsenter -t 1 -a sh -c '[ "$(readlink /proc/self/ns/pid)" = "$HOSTNS" ]' 2>/dev/null \
    && e "nsenter" || b "nsenter"
chroot / true 2>/dev/null && e "chroot" || b "chroot"
"""


def attempt_shell(token: str) -> Lines:
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "HOSTPID": str(os.getpid()),
        "HOSTNS": os.readlink("/proc/self/ns/pid"),
    }
    return run(default().with_env(env), ["sh", "-c", SHELL_PAYLOAD])


PYTHON_PAYLOAD = r"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
def v(ok, what):
    print(("ESCAPED " if ok else "blocked ") + what)
v(libc.unshare(0x10000000) == 0, "unshare(CLONE_NEWUSER) via ctypes")
v(libc.ptrace(16, 1, 0, 0) == 0, "ptrace(ATTACH, 1) via ctypes")
for fd in range(3, 256):
    try:
        os.fstat(fd)
    except OSError:
        continue
    v(True, "fd %d open" % fd)
try:
    with open("/proc/sys/kernel/core_pattern", "w") as f:
        v(True, "core_pattern writable")
except OSError as e:
    v(False, "core_pattern: %s" % e)
try:
    os.setuid(0)
    status = open("/proc/self/status").read()
    v(int(status.split("CapEff:")[1].split()[0], 16) != 0, "setuid(0) with caps")
except OSError as e:
    v(False, "setuid: %s" % e)
"""


def attempt_python() -> Lines:
    return run(default(), [sys.executable, "-I", "-c", PYTHON_PAYLOAD])


SOCKETS_PAYLOAD = r"""
import errno, os, socket, stat, sys
def v(ok, what):
    print(("ESCAPED " if ok else "blocked ") + what)
def connect(path):
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM, socket.SOCK_SEQPACKET):
        s = socket.socket(socket.AF_UNIX, kind)
        try:
            s.connect(path)
            return "connected"
        except OSError as e:
            err = errno.errorcode.get(e.errno, str(e.errno))
        finally:
            s.close()
    return err
found = set(sys.argv[1:])  # what the host planted, and the socket files the root shows
for top, dirs, files in os.walk("/"):  # four levels deep: /run/user/0/bus, /var/tmp/x/s
    if top == "/":
        dirs[:] = [d for d in dirs if d not in ("proc", "sys")]
    if top.count("/") >= 4:
        dirs[:] = []
    for name in files + dirs:
        path = os.path.join(top, name)
        try:
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                found.add(path)
        except OSError:
            pass
with open("/proc/net/unix") as f:  # its own network namespace's list
    for line in f.readlines()[1:]:
        parts = line.split(None, 7)
        if len(parts) == 8 and parts[7].startswith("/"):
            found.add(parts[7].strip())
for path in sorted(found):
    res = connect(path)
    v(res == "connected", "connect %s: %s" % (path, res))
v(False, "walked / for sockets: %d candidates" % len(found))
"""


def attempt_sockets() -> Lines:
    """Host unix sockets: listeners where daemons keep theirs, and every socket file found.

    A read-only bind does not stop ``connect()``; the private /run, the hidden
    homes and the masks of the host's path sockets must. The payload walks the
    whole root for socket files and tries each, and every path it planted.
    """
    tag = secrets.token_hex(6)
    dirs = ["/var/tmp", os.path.expanduser("~")]
    if os.geteuid() == 0:
        dirs += ["/run", "/var/run", "/root"]
    socks, paths = [], []
    try:
        for d in dirs:
            path = os.path.join(d, f"nscg-hostile-{tag}.sock")
            if not os.access(d, os.W_OK) or os.path.lexists(path):
                continue
            s = socket.socket(socket.AF_UNIX)
            s.bind(path)
            s.listen(8)
            os.chmod(path, 0o777)
            socks.append(s)
            paths.append(path)
        return run(default(), [sys.executable, "-I", "-c", SOCKETS_PAYLOAD, *paths])
    finally:
        for s in socks:
            s.close()
        for p in paths:
            with contextlib.suppress(OSError):
                os.unlink(p)


RACE_ATTACKER = r"""
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD, RENAME_EXCHANGE = -100, 2
os.chdir("/tmp/share")
end = time.monotonic() + float(sys.argv[1])
targets = ["/", "../../../../../../..", "/proc/self/root", "/tmp", "/tmp/share/link"]
os.mkdir("link")  # a real directory and a symlink trade places, atomically:
os.symlink("/", "alt")  # /tmp/share/link always exists, and nothing is deleted
print("ready", flush=True)
n = 0
while time.monotonic() < end:
    n += 1
    os.symlink(targets[n % len(targets)], "alt.new")
    os.rename("alt.new", "alt")  # alt is the symlink here: a new target
    libc.renameat2(AT_FDCWD, b"link", AT_FDCWD, b"alt", RENAME_EXCHANGE)  # link: symlink
    libc.renameat2(AT_FDCWD, b"link", AT_FDCWD, b"alt", RENAME_EXCHANGE)  # link: directory
print(n)
"""


def race(share: str, seconds: float) -> Lines:
    """CVE-2021-30465: sandbox A swaps /tmp/share/link while B mounts on /tmp/share/link/x.

    Every mount B's payload can see is inside its root, so the marker tmpfs
    must show in its mountinfo (wherever the symlink led, inside the root),
    or the spawn must fail.
    """
    marker = 1237 * 4096  # size=4948k: the tmpfs's fingerprint in mountinfo
    shared = RootFS.host().bind(share, "/tmp/share", readonly=False)  # /tmp: a tmpfs
    attacker = default().with_rootfs(shared)
    victim = default().with_rootfs(shared.tmpfs("/tmp/share/link/x", size=marker))
    out: Lines = []
    runs = refused = 0
    argv = [sys.executable, "-I", "-c", RACE_ATTACKER, str(seconds)]
    with attacker.spawn(argv, stdout=subprocess.PIPE) as a:
        assert a.stdout is not None
        if a.stdout.readline() != b"ready\n":
            raise RuntimeError("the attacker did not start")
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            runs += 1
            try:
                r = victim.run(
                    ["sh", "-c", "grep size=4948k /proc/self/mountinfo | cut -d' ' -f5"],
                    capture_output=True,
                    timeout=30,
                )
            except nscg.SpawnError:
                refused += 1  # not a directory inside the root at that moment: fail closed
                continue
            where = (r.stdout or b"").decode().split()
            if len(where) != 1:
                out.append(f"ESCAPED the tmpfs is not inside the root: {where} (spawn {runs})")
        swaps = a.stdout.read()
        a.wait(timeout=60)
    out.append(
        f"blocked race: {int(swaps or 0)} swaps, {runs} spawns, {refused} refused, "
        f"{len(out)} misplaced"
    )
    return out


def run_all(probe_dir: str) -> dict[str, Lines]:
    """Every attempt; ``probe_dir`` holds ``escape`` (and its setuid/fcaps copies)."""
    exe = os.path.join(probe_dir, "escape")
    token = f"NSCG_HOST_SECRET_{secrets.token_hex(8)}"
    pt, kl = attempt_ptrace_kill(exe, token)
    steps: dict[str, Callable[[], Lines]] = {
        "fds": lambda: attempt_fds(exe),
        "exe": lambda: attempt_exe(exe),
        "ptrace": lambda: pt,
        "kill": lambda: kl,
        "ns": lambda: attempt_ns(exe),
        "tty": lambda: attempt_tty(exe),
        "abi": lambda: attempt_abi(exe),
        "privileged-exec": lambda: attempt_privileged_exec(probe_dir),
        "cgroup": lambda: attempt_cgroup(exe),
        "secrets": lambda: attempt_secrets(exe, token),
        "host-root": lambda: attempt_host_root(exe),
        "mknod": lambda: attempt_mknod(exe),
        "rlimit": lambda: attempt_rlimit(exe),
        "network": lambda: attempt_network(exe),
        "shell": lambda: attempt_shell(token),
        "python": attempt_python,
        "sockets": attempt_sockets,
    }
    results: dict[str, Lines] = {}
    for name, step in steps.items():
        try:
            results[name] = step()
        except Exception as e:  # report, so one failure does not hide the others
            results[name] = [f"error {type(e).__name__}: {e}"]
    return results


def main(probe_dir: str) -> None:
    """Print :func:`run_all`'s results as JSON (for :func:`tests.conftest.run_as_nobody`)."""
    print(json.dumps(run_all(probe_dir)))
