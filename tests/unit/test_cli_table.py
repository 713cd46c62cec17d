"""Every API option of Container and Limits has a CLI counterpart (or a reason not to)."""

from __future__ import annotations

import argparse
import typing

import attrs

from nscg import Container, rootfs
from nscg.cgroups import Limits
from nscg.cli import API_ONLY, API_TO_CLI, ROOTFS_OPS_TO_CLI, _parser

BUILDERS = sorted(
    f"Container.{name}"
    for name in dir(Container)
    if name.startswith(("with_", "without_")) or name in ("joining", "entering")
)
LIMITS = sorted(f"Limits.{f.name}" for f in attrs.fields(Limits))


def _flags(p: argparse.ArgumentParser, command: str) -> set[str]:
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    parser = sub.choices[command]
    return {s for a in parser._actions for s in a.option_strings}


def test_every_builder_and_limit_is_in_the_table() -> None:
    assert BUILDERS, "no builders found"
    missing = [name for name in (*BUILDERS, *LIMITS) if name not in API_TO_CLI]
    assert not missing, f"add these to nscg.cli.API_TO_CLI: {missing}"
    stale = set(API_TO_CLI) - set(BUILDERS) - set(LIMITS)
    assert not stale, f"API_TO_CLI names things that no longer exist: {stale}"


def test_every_listed_flag_exists_and_api_only_has_a_reason() -> None:
    p = _parser()
    run_flags, exec_flags = _flags(p, "run"), _flags(p, "exec")
    for name, flags in API_TO_CLI.items():
        if flags is None:
            assert API_ONLY.get(name), f"{name} is API-only without a reason"
            continue
        for flag in flags:
            if flag.startswith("exec "):
                assert flag.split()[1] in exec_flags, (name, flag)
            else:
                assert flag in run_flags, (name, flag)
    none = {k for k, v in (*API_TO_CLI.items(), *ROOTFS_OPS_TO_CLI.items()) if v is None}
    assert set(API_ONLY) == none


def test_every_rootfs_op_has_its_flags() -> None:
    ops = {t.__name__ for t in typing.get_args(rootfs.Op)}
    assert ops == set(ROOTFS_OPS_TO_CLI), "add the new RootFS op to nscg.cli.ROOTFS_OPS_TO_CLI"
    run_flags = _flags(_parser(), "run")
    for name, flags in ROOTFS_OPS_TO_CLI.items():
        if flags is None:
            assert API_ONLY.get(name), f"{name} is API-only without a reason"
            continue
        assert flags, name
        for flag in flags:
            assert flag in run_flags, (name, flag)


BWRAP_FLAGS = [
    *("--args", "--unshare", "--share-net", "--userns", "--pidns", "--netns", "--uid", "--gid"),
    *("--hostname", "--chdir", "--setenv", "--unsetenv", "--clearenv", "--sync-fd", "--bind"),
    *("--bind-try", "--dev-bind", "--dev-bind-try", "--ro-bind", "--ro-bind-try", "--bind-fd"),
    *("--ro-bind-fd", "--remount-ro", "--proc", "--dev", "--tmpfs", "--mqueue", "--dir", "--file"),
    *("--bind-data", "--ro-bind-data", "--symlink", "--seccomp", "--block-fd", "--info-fd"),
    *("--json-status-fd", "--cap-add", "--cap-drop", "--perms", "--size", "--chmod"),
]


def test_bwraps_options_exist() -> None:
    """bwrap 0.8's options that nscg takes under the same name (--args: before parsing)."""
    run_flags = _flags(_parser(), "run") | {"--args"}
    assert [f for f in BWRAP_FLAGS if f not in run_flags] == []


def test_the_required_bwrap_like_flags_exist() -> None:
    run_flags = _flags(_parser(), "run") | {s for a in _parser()._actions for s in a.option_strings}
    wanted = "--root --bind --ro-bind --tmpfs --network --hostname --uid --gid --env --cwd "
    wanted += "--memory --cpus --pids --timeout --cap-add --cap-drop --seccomp --keep-upper "
    wanted += "--no-init --share-net --json --version"
    for flag in wanted.split():
        assert flag in run_flags, flag


def test_root_defaults_to_the_host_read_only() -> None:
    from nscg.cli import build_container
    from nscg.rootfs import RootFS

    args = _parser().parse_args(["run", "--", "true"])
    assert build_container(args).rootfs == RootFS.host()
    args = _parser().parse_args(["run", "--root", "none", "--", "true"])
    assert build_container(args).rootfs is None
