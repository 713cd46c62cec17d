"""The ``nscg`` command line: ``nscg run [OPTIONS] -- CMD...`` and ``nscg features``.

Bad options print one line and exit with status 2; the payload's exit status
is passed through (128+N when it was killed by signal N).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import attrs


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]  # never returns
        self.exit(2, f"nscg: {message}\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="nscg", description="Run commands in Linux sandboxes.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run a command in a new sandbox")
    r.add_argument("--hostname", help="hostname inside (default: nscg)")
    r.add_argument("--share-net", action="store_true", help="keep the host's network namespace")
    r.add_argument("--no-init", action="store_true", help="make the command pid 1 itself")
    r.add_argument("--uid", type=int, help="uid inside the sandbox")
    r.add_argument("--gid", type=int, help="gid inside the sandbox")
    r.add_argument("--cwd", help="working directory inside")
    r.add_argument("--env", action="append", default=[], metavar="K=V", help="set a variable")
    r.add_argument("--timeout", type=float, help="kill the sandbox after SECONDS")
    r.add_argument("cmd", nargs=argparse.REMAINDER, help="-- COMMAND [ARG...]")
    sub.add_parser("features", help="print what this host supports, as JSON")
    ch = sub.add_parser("check", help="what this host supports for sandboxes, and why not")
    ch.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nscg`` command."""
    args = _parser().parse_args(argv)
    import nscg

    if args.command == "check":
        from nscg.check import render, run_checks

        checks = run_checks()
        if args.json:
            print(json.dumps([attrs.asdict(c) for c in checks], indent=2))
        else:
            print(render(checks))
        return 0
    if args.command == "features":
        print(json.dumps(attrs.asdict(nscg.features()), indent=2))
        return 0
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        print("nscg: run needs a command after --", file=sys.stderr)
        return 2
    try:
        # the host's root read-only, with a fresh /proc, a minimal /dev and a
        # private /tmp: without a RootFS the payload would share the caller's
        # filesystem (as root: the host's, read-write) and see its processes
        c = nscg.Container().with_rootfs(nscg.RootFS.host())
        if args.share_net:
            c = c.without_namespaces("net")
        if args.hostname:
            c = c.with_hostname(args.hostname)
        if args.no_init:
            c = c.with_init(False)
        if args.uid is not None or args.gid is not None:
            c = c.with_user(args.uid if args.uid is not None else 0, args.gid)
        if args.cwd:
            c = c.with_cwd(args.cwd)
        if args.env:
            c = c.with_env(dict(kv.split("=", 1) for kv in args.env))
        result = c.run(cmd, timeout=args.timeout)
    except nscg.TimeoutExpired as e:
        print(f"nscg: {e}", file=sys.stderr)
        return 124
    except (nscg.SpecError, ValueError) as e:
        print(f"nscg: {e}", file=sys.stderr)
        return 2
    except nscg.NscgError as e:
        print(f"nscg: {e}", file=sys.stderr)
        return 125
    rc = result.returncode
    return 128 - rc if rc < 0 else rc


if __name__ == "__main__":
    sys.exit(main())
