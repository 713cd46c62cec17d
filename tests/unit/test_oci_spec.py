"""nscg.oci: config.json to a Bundle and back (no privileges, nothing runs)."""

from __future__ import annotations

import copy
import json
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import nscg
from nscg import Capability, Namespace
from nscg.cgroups import CpuMax
from nscg.oci import Bundle, OciSpecError, OciUnsupportedError, load, loads, to_config
from nscg.oci.cli import default_spec
from nscg.rootfs import Bind, Dev, Mask, Mount, Mqueue, Proc, ReadOnly, Tmpfs
from nscg.seccomp import Seccomp


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    (tmp_path / "rootfs").mkdir()
    return tmp_path


def _load(bundle: Path, change: Callable[[dict[str, Any]], object] | None = None) -> Bundle:
    doc = default_spec()
    if change is not None:
        change(doc)
    return loads(doc, str(bundle), rootless=False)


def test_runc_default_spec(bundle: Path) -> None:
    b = _load(bundle)
    c = b.container
    assert b.args == ("sh",)
    assert b.root_path == str(bundle / "rootfs")
    assert b.root_readonly
    assert c.namespaces == Namespace.PID | Namespace.NET | Namespace.IPC | Namespace.UTS | (
        Namespace.MOUNT
    )
    assert c.hostname == "nscg"
    assert c.user == 0 and c.group == 0 and c.groups == ()
    assert dict(c.env or ())["TERM"] == "xterm"
    assert c.cwd == "/"
    assert not c.init  # the process is pid 1, as with runc
    assert c.no_new_privs
    assert c.seccomp == "unconfined"
    caps = c.capabilities
    assert isinstance(caps, nscg.Capabilities)
    want = {Capability.AUDIT_WRITE, Capability.KILL, Capability.NET_BIND_SERVICE}
    assert caps.bounding == caps.effective == caps.permitted == want
    assert caps.inheritable == caps.ambient == frozenset()
    assert [(r.resource, r.soft, r.hard) for r in c.rlimits] == [(7, 1024, 1024)]
    assert c.rootfs is not None
    ops = c.rootfs.ops
    # the root (nodev: the device rules deny all), then the mounts in order
    assert ops[0] == Bind(str(bundle / "rootfs"), "/", readonly=False, nodev=True)
    assert c.rootfs.readonly_root
    kinds = [type(op) for op in ops[1:8]]
    assert kinds == [Proc, Dev, Mount, Tmpfs, Mqueue, Mount, Mount]
    devpts = ops[3]
    assert isinstance(devpts, Mount) and devpts.fstype == "devpts"
    assert dict(devpts.options) == {"ptmxmode": "0666", "mode": "0620", "gid": "5"}
    assert (devpts.nosuid, devpts.noexec, devpts.nodev) == (True, True, False)
    assert ops[4] == Tmpfs("/dev/shm", size=65536 * 1024, mode=0o1777, noexec=True)
    cg = ops[7]
    assert isinstance(cg, Mount) and (cg.fstype, cg.readonly) == ("cgroup2", True)
    assert Mask("/proc/kcore") in ops and ReadOnly("/proc/sys") in ops
    # what was read and not applied is said, not dropped in silence
    assert (
        "mounts[1].options[1]",
        "access-time options are not applied (the kernel's relatime)",
    ) in b.ignored


def test_load_reads_the_bundle_directory(bundle: Path) -> None:
    (bundle / "config.json").write_text(json.dumps(default_spec()))
    assert load(bundle, rootless=False) == _load(bundle)
    with pytest.raises(OciSpecError, match="cannot read"):
        load(bundle / "rootfs")


def _set(path: str, value: object) -> Callable[[dict[str, Any]], None]:
    """A change setting the JSON path ``a.b[2].c`` (made if missing)."""

    def change(doc: dict[str, Any]) -> None:
        keys: list[str | int] = []
        for part in path.split("."):
            name, _, rest = part.partition("[")
            keys.append(name)
            if rest:
                keys.append(int(rest.rstrip("]")))
        node: Any = doc
        for k in keys[:-1]:
            if isinstance(k, str) and k not in node:
                node[k] = {}
            node = node[k]
        node[keys[-1]] = value

    return change


def _rlimits(doc: dict[str, Any]) -> None:
    doc["process"]["rlimits"] = [
        {"type": "RLIMIT_NOFILE", "soft": 10, "hard": 10},
        {"type": "RLIMIT_NPROC", "soft": 10, "hard": 10},
        {"type": "RLIMIT_CORE", "soft": 0, "hard": "lots"},
    ]


def _userns(doc: dict[str, Any]) -> None:
    doc["linux"]["namespaces"].append({"type": "user"})
    doc["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 0}]
    doc["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 1}]


INVALID: list[tuple[Callable[[dict[str, Any]], object], str]] = [
    (_rlimits, "process.rlimits[2].hard"),
    (_set("process.rlimits[0].soft", -1), "process.rlimits[0].soft"),
    (_set("process.rlimits[0].soft", 2048), "process.rlimits[0].soft"),
    (_set("process.rlimits[0].type", "RLIMIT_BOGUS"), "process.rlimits[0].type"),
    (_set("process.env", ["A=1", "NOEQUALS"]), "process.env[1]"),
    (_set("process.env", "A=1"), "process.env"),
    (_set("process.cwd", "relative"), "process.cwd"),
    (_set("process.args", []), "process.args"),
    (_set("process.user.uid", "0"), "process.user.uid"),
    (_set("process.user.additionalGids", [1, -2]), "process.user.additionalGids[1]"),
    (_set("process.user.umask", 0o1000), "process.user.umask"),
    (_set("process.oomScoreAdj", 1001), "process.oomScoreAdj"),
    (_set("process.capabilities.bounding[1]", "CAP_BOGUS"), "process.capabilities.bounding[1]"),
    (_set("process.noNewPrivileges", "yes"), "process.noNewPrivileges"),
    (_set("linux.namespaces[0].type", "bogus"), "linux.namespaces[0].type"),
    (_set("linux.namespaces[1]", {"type": "pid"}), "linux.namespaces[1].type"),
    (_set("linux.namespaces[0].path", "relative"), "linux.namespaces[0].path"),
    (_userns, "linux.uidMappings[0].size"),
    (_set("linux.rootfsPropagation", "sideways"), "linux.rootfsPropagation"),
    (_set("mounts[3].options[4]", "size=12%"), "mounts[3].options"),
    (_set("mounts[0].destination", "proc"), "mounts[0].destination"),
    (_set("mounts[1].options", ["bind", "uid=3"]), "mounts[1].options"),
    (_set("root.path", "missing"), "root.path"),
    (_set("linux.resources.memory.limit", "1G"), "linux.resources.memory.limit"),
    (
        _set("linux.resources.memory", {"limit": 100 << 20, "swap": 50 << 20}),
        "linux.resources.memory.swap",
    ),
    (_set("linux.resources.cpu.shares", 1), "linux.resources.cpu.shares"),
    (_set("linux.resources.pids.limit", 1.5), "linux.resources.pids.limit"),
    (_set("hostname", "not a host name"), "hostname"),
]


@pytest.mark.parametrize(("change", "path"), INVALID, ids=[p for _, p in INVALID])
def test_invalid_values_name_their_json_path(
    bundle: Path, change: Callable[[dict[str, Any]], object], path: str
) -> None:
    with pytest.raises(OciSpecError) as ei:
        _load(bundle, change)
    assert ei.value.path == path
    assert str(ei.value).startswith(f"{path}: ")
    assert isinstance(ei.value, nscg.SpecError) and isinstance(ei.value, ValueError)
    again = pickle.loads(pickle.dumps(ei.value))
    assert (type(again), again.path, str(again)) == (OciSpecError, path, str(ei.value))


UNSUPPORTED: list[tuple[Callable[[dict[str, Any]], object], str]] = [
    (_set("process.terminal", True), "process.terminal"),
    (_set("process.apparmorProfile", "x"), "process.apparmorProfile"),
    (_set("process.selinuxLabel", "x"), "process.selinuxLabel"),
    (_set("process.ioPriority", {"class": "IOPRIO_CLASS_IDLE"}), "process.ioPriority"),
    (_set("hooks", {"prestart": [{"path": "/bin/true"}]}), "hooks"),
    (_set("linux.sysctl", {"net.ipv4.ip_forward": "1"}), "linux.sysctl"),
    (_set("linux.devices", [{"path": "/dev/fuse", "type": "c"}]), "linux.devices"),
    (_set("linux.rootfsPropagation", "rshared"), "linux.rootfsPropagation"),
    (_set("linux.personality", {"domain": "LINUX32"}), "linux.personality"),
    (_set("mounts[1].options[1]", "shared"), "mounts[1].options[1]"),
    (_set("mounts[1].options[1]", "idmap"), "mounts[1].options[1]"),
    (_set("mounts[1].uidMappings", [{"containerID": 0}]), "mounts[1].uidMappings"),
    (
        _set("linux.seccomp", {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/s"}),
        "linux.seccomp.listenerPath",
    ),
    (
        _set(
            "linux.seccomp",
            {"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_LOG"]},
        ),
        "linux.seccomp.flags[0]",
    ),
    (_set("linux.resources.memory.kernel", 1 << 20), "linux.resources.memory.kernel"),
    (_set("linux.resources.memory.swappiness", 10), "linux.resources.memory.swappiness"),
    (_set("linux.resources.cpu.realtimeRuntime", 10), "linux.resources.cpu.realtimeRuntime"),
    (_set("linux.resources.unified", {"memory.high": "1"}), "linux.resources.unified"),
    (_set("linux.resources.network", {"classID": 1}), "linux.resources.network"),
    (_set("process.capabilities.bounding[0]", "CAP_MKNOD"), "linux.resources.devices"),
    (_set("linux.resources.devices[0].allow", True), "linux.resources.devices"),
    (_set("ociVersion", "2.0.0"), "ociVersion"),
]


@pytest.mark.parametrize(("change", "path"), UNSUPPORTED, ids=[p for _, p in UNSUPPORTED])
def test_what_nscg_cannot_honour_is_refused_by_name(
    bundle: Path, change: Callable[[dict[str, Any]], object], path: str
) -> None:
    with pytest.raises(OciUnsupportedError) as ei:
        _load(bundle, change)
    assert ei.value.path == path
    assert isinstance(ei.value, nscg.UnsupportedError)
    assert ei.value.feature == f"oci:{path}"


def test_unknown_fields_are_ignored(bundle: Path) -> None:
    def change(doc: dict[str, Any]) -> None:
        doc["vm"] = {"hypervisor": {}}
        doc["process"]["futureField"] = 1
        doc["linux"]["somethingNew"] = [1]
        doc["mounts"][0]["extra"] = True

    assert _load(bundle, change) == _load(bundle)


def test_namespaces_joined_by_path_are_opened_at_start(bundle: Path) -> None:
    b = _load(bundle, _set("linux.namespaces[1]", {"type": "network", "path": "/proc/self/ns/net"}))
    assert b.joins == ((Namespace.NET, "/proc/self/ns/net"),)
    assert not b.container.namespaces & Namespace.NET
    c, refs = b.open_joins()
    try:
        assert [r.kind for r in refs] == [Namespace.NET]
        assert c.join == tuple(refs)
    finally:
        for r in refs:
            r.close()


def test_user_namespace_and_process_fields(bundle: Path) -> None:
    def change(doc: dict[str, Any]) -> None:
        doc["linux"]["namespaces"].append({"type": "user"})
        doc["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        doc["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        doc["process"]["user"] = {
            "uid": 1000,
            "gid": 1000,
            "additionalGids": [5, 6],
            "umask": 0o027,
        }
        doc["process"]["oomScoreAdj"] = 100
        doc["process"]["rlimits"].append({"type": "RLIMIT_CORE", "soft": 0, "hard": 2**64 - 1})
        doc["domainname"] = "example.org"
        doc["annotations"] = {"a": "b"}
        doc["linux"]["timeOffsets"] = {"monotonic": {"secs": 10, "nanosecs": 500000000}}
        doc["linux"]["namespaces"].append({"type": "time"})

    b = _load(bundle, change)
    c = b.container
    assert c.uid_map == (nscg.IdMap(0, 100000, 65536),)
    assert (c.user, c.group, c.groups) == (1000, 1000, (5, 6))
    assert (b.umask, b.oom_score_adj) == (0o027, 100)
    assert c.rlimits[1].hard == 2**64 - 1
    assert c.domainname == "example.org"
    assert b.annotations == (("a", "b"),)
    assert c.time_offsets == nscg.TimeOffsets(monotonic=10.5)


def test_resources_become_cgroup_v2_limits(bundle: Path) -> None:
    res = {
        "memory": {"limit": 256 << 20, "reservation": 64 << 20, "swap": 512 << 20},
        "cpu": {"shares": 1024, "quota": 50000, "period": 100000, "cpus": "0-1"},
        "pids": {"limit": 64},
        "blockIO": {"weight": 500},
        "hugepageLimits": [{"pageSize": "2MB", "limit": 4 << 20}],
    }
    b = _load(bundle, _set("linux.resources", res))
    assert b.container.cgroup is not None
    lim = b.container.cgroup.limits
    assert (lim.memory_max, lim.memory_low, lim.memory_swap_max) == (
        256 << 20,
        64 << 20,
        256 << 20,  # v1's swap counts the memory too
    )
    assert lim.cpu_weight == 39  # runc's conversion of 1024 shares
    assert lim.cpu_max == CpuMax(50000, 100000)
    assert lim.cpuset_cpus == "0-1"
    assert lim.pids_max == 64
    assert lim.io_weight == 4950
    assert lim.hugetlb[0].page_size == "2MB"
    assert _load(bundle, _set("linux.resources.pids", {"limit": -1})).container.cgroup
    assert _load(bundle, _set("linux.resources", {})).container.cgroup is None


def test_seccomp_profile(bundle: Path) -> None:
    sec = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
        "flags": ["SECCOMP_FILTER_FLAG_TSYNC"],
        "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
            {
                "names": ["personality"],
                "action": "SCMP_ACT_ERRNO",
                "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}],
            },
        ],
    }
    b = _load(bundle, _set("linux.seccomp", sec))
    s = b.container.seccomp
    assert isinstance(s, Seccomp)
    assert {r.syscall for r in s.rules} == {"mkdir", "mkdirat", "personality"}
    assert len(s.arches) == 2  # the listed architectures, as runc allows them
    assert len(s.compile()) > 0


def test_bind_mount_options(bundle: Path) -> None:
    (bundle / "data").mkdir()

    def change(doc: dict[str, Any]) -> None:
        doc["mounts"].append(
            {
                "destination": "/data",
                "type": "bind",
                "source": "data",
                "options": ["rbind", "ro", "nosuid", "nodev", "noexec", "rprivate"],
            }
        )
        doc["mounts"].append(
            {"destination": "/etc/hosts", "source": "/etc/hosts", "options": ["bind", "rw"]}
        )

    ops = _load(bundle, change).container.rootfs.ops  # type: ignore[union-attr]  # loaded: set
    assert (
        Bind(
            str(bundle / "data"),
            "/data",
            readonly=True,
            recursive=True,
            nosuid=True,
            nodev=True,
            noexec=True,
        )
        in ops
    )
    assert Bind("/etc/hosts", "/etc/hosts", readonly=False, recursive=False) in ops


def test_without_a_dev_mount_the_default_devices_are_bound(bundle: Path) -> None:
    def change(doc: dict[str, Any]) -> None:
        doc["mounts"] = [m for m in doc["mounts"] if not m["destination"].startswith("/dev")]

    ops = _load(bundle, change).container.rootfs.ops  # type: ignore[union-attr]  # loaded: set
    assert Bind("/dev/null", "/dev/null", readonly=False) in ops
    assert not any(isinstance(op, Dev) for op in ops)


def _normal(b: Bundle) -> Bundle:
    return Bundle(
        b.container,
        b.args,
        root_path=b.root_path,
        root_readonly=b.root_readonly,
        umask=b.umask,
        oom_score_adj=b.oom_score_adj,
        joins=b.joins,
        annotations=b.annotations,
    )


@pytest.mark.parametrize(
    "change",
    [
        None,
        _set(
            "linux.seccomp",
            {
                "defaultAction": "SCMP_ACT_ERRNO",
                "defaultErrnoRet": 38,
                "syscalls": [
                    {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
                    {
                        "names": ["ioctl"],
                        "action": "SCMP_ACT_ALLOW",
                        "args": [
                            {
                                "index": 1,
                                "value": 4294967295,
                                "valueTwo": 21505,
                                "op": "SCMP_CMP_MASKED_EQ",
                            }
                        ],
                    },
                ],
            },
        ),
        _set(
            "linux.resources",
            {
                "memory": {"limit": 1 << 30, "swap": 2 << 30},
                "pids": {"limit": 10},
                "cpu": {"quota": 20000},
            },
        ),
        _set("process.user", {"uid": 5, "gid": 6, "additionalGids": [7], "umask": 0o77}),
        _set("annotations", {"x": "y"}),
    ],
)
def test_round_trip(bundle: Path, change: Callable[[dict[str, Any]], object] | None) -> None:
    first = _load(bundle, change)
    doc = to_config(first)
    json.dumps(doc)  # plain JSON
    again = loads(copy.deepcopy(doc), str(bundle), rootless=False)
    assert _normal(again) == _normal(first)
    assert to_config(again) == doc


def test_a_hand_built_container_is_written(bundle: Path) -> None:
    root = str(bundle / "rootfs")
    c = (
        nscg.Container()
        .with_rootfs(nscg.RootFS.from_directory(root).tmpfs("/tmp", size=1 << 20))
        .with_hostname("box")
        .with_env({"A": "1"})
        .with_capabilities(nscg.Capabilities.from_keep(["CAP_KILL"]))
        .with_seccomp(Seccomp.docker_default())
    )
    doc = to_config(c, ["/bin/true"])
    assert doc["process"]["args"] == ["/bin/true"]
    assert doc["root"] == {"path": root, "readonly": True}
    assert {"type": "user"} in doc["linux"]["namespaces"]
    assert doc["linux"]["uidMappings"]
    b = loads(doc, rootless=os.geteuid() != 0)
    assert b.container.hostname == "box"
    assert b.container.seccomp == c.seccomp
    assert b.container.capabilities == c.capabilities
    with pytest.raises(nscg.UnsupportedError, match=r"'default' has no config\.json form"):
        to_config(nscg.Container().with_rootfs(nscg.RootFS.from_directory(root)))
    with pytest.raises(nscg.UnsupportedError, match="bind of a directory at /"):
        to_config(nscg.Container().with_seccomp("unconfined").without_rootfs())
