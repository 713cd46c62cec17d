#!/usr/bin/env python3
"""Generate nscg's syscall tables (``src/nscg/seccomp/_data/syscalls_*.json``) from kernel sources.

The tables are derived from the kernel's own syscall tables, never typed by hand:

* x86_64: ``arch/x86/entry/syscalls/syscall_64.tbl`` (ABIs ``common`` and ``64``);
* i386:   ``arch/x86/entry/syscalls/syscall_32.tbl`` (ABI ``i386``);
* x32:    ``arch/x86/entry/syscalls/syscall_64.tbl`` (ABIs ``common`` and ``x32``, numbers
  with ``__X32_SYSCALL_BIT`` set);
* aarch64: the generic table. Kernels up to 6.10 describe it in
  ``include/uapi/asm-generic/unistd.h`` (selected by the ``__ARCH_WANT_*`` macros of
  ``arch/arm64/include/uapi/asm/unistd.h``); 6.11 and later in ``scripts/syscall.tbl``
  (selected by the ABIs listed in ``arch/arm64/kernel/Makefile.syscalls``). Both are read.

Usage::

    python tools/gen_syscall_tables.py KERNEL_SRC [--out src/nscg/seccomp/_data] [--source TEXT]

``KERNEL_SRC`` is an unpacked kernel tree (only the files above and the top-level ``Makefile``
are needed). The output is deterministic: the same tree gives byte-identical JSON. The kernel
version is read from the ``Makefile``; ``--source`` records where the tree came from (e.g.
``"Debian linux-source-6.1 6.1.192-3"``).

The shipped tables were made with::

    apt-get download linux-source-6.1      # Debian bookworm, 6.1.192-3
    dpkg-deb --fsys-tarfile linux-source-6.1_*.deb | tar -x ./usr/src/linux-source-6.1.tar.xz
    tar -xJf usr/src/linux-source-6.1.tar.xz --wildcards 'linux-source-6.1/Makefile' \\
        'linux-source-6.1/arch/x86/entry/syscalls/*' \\
        'linux-source-6.1/include/uapi/asm-generic/unistd.h' \\
        'linux-source-6.1/arch/arm64/include/uapi/asm/unistd.h'
    python tools/gen_syscall_tables.py linux-source-6.1 \\
        --source "Debian bookworm linux-source-6.1 6.1.192-3"
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

X32_SYSCALL_BIT = 0x40000000

AUDIT_ARCH = {
    "x86_64": 0xC000003E,
    "i386": 0x40000003,
    "x32": 0xC000003E,
    "aarch64": 0xC00000B7,
}


def parse_tbl(path: Path, abis: set[str]) -> dict[str, int]:
    """Parse a kernel ``*.tbl`` file, keeping the entries whose ABI is in ``abis``.

    Args:
        path: the table file (``<number> <abi> <name> [<entry point> ...]`` lines).
        abis: the ABI names to keep.

    Returns:
        A mapping from syscall name to number.
    """
    table: dict[str, int] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) < 3:
            raise SystemExit(f"{path}: malformed line: {raw!r}")
        nr, abi, name = int(fields[0]), fields[1], fields[2]
        if abi in abis:
            if name in table and table[name] != nr:
                raise SystemExit(f"{path}: {name} defined twice")
            table[name] = nr
    return table


_DEFINE = re.compile(r"^#\s*define\s+(\w+)(?:\s+(.*?))?\s*$")


def _eval_condition(expr: str, macros: dict[str, str]) -> bool:
    """Evaluate a preprocessor condition made of defined(), ==, !=, ||, && and !."""

    def defined(match: re.Match[str]) -> str:
        return "1" if match.group(1) in macros else "0"

    text = re.sub(r"defined\s*\(\s*(\w+)\s*\)", defined, expr)
    text = re.sub(r"defined\s+(\w+)", defined, text)

    def ident(match: re.Match[str]) -> str:
        value = macros.get(match.group(0), "0")
        return value if re.fullmatch(r"\d+", value or "") else ("1" if value == "" else "0")

    text = re.sub(r"\b[A-Za-z_]\w*\b", ident, text)
    text = text.replace("||", " or ").replace("&&", " and ")
    text = re.sub(r"!(?!=)", " not ", text)
    if not re.fullmatch(r"[\d\s()!=<>a-z]*", text):
        raise SystemExit(f"cannot evaluate #if {expr!r}")
    return bool(eval(text, {"__builtins__": {}}, {}))


def parse_generic_unistd(path: Path, predefined: dict[str, str]) -> dict[str, int]:
    """Parse ``include/uapi/asm-generic/unistd.h`` as the preprocessor would.

    Args:
        path: the header.
        predefined: macros defined before the header is included (the architecture's
            ``__ARCH_WANT_*`` and ``__BITS_PER_LONG``).

    Returns:
        A mapping from syscall name to number.
    """
    macros = dict(predefined)
    stack: list[tuple[bool, bool]] = []  # (this branch active, some branch already taken)
    active = True
    lines = path.read_text().replace("\\\n", " ").splitlines()
    for raw in lines:
        line = re.sub(r"/\*.*?\*/", "", raw).strip()
        if not line.startswith("#"):
            continue
        directive = line[1:].strip()
        word, _, rest = directive.partition(" ")
        rest = rest.strip()
        if word in ("if", "ifdef", "ifndef"):
            if word == "ifdef":
                cond = rest in macros
            elif word == "ifndef":
                cond = rest not in macros
            else:
                cond = _eval_condition(rest, macros)
            stack.append((active, active and cond))
            active = active and cond
        elif word == "elif":
            parent, taken = stack[-1]
            cond = parent and not taken and _eval_condition(rest, macros)
            stack[-1] = (parent, taken or cond)
            active = cond
        elif word == "else":
            parent, taken = stack[-1]
            active = parent and not taken
            stack[-1] = (parent, True)
        elif word == "endif":
            active = stack.pop()[0]
        elif not active:
            continue
        elif word == "define":
            match = _DEFINE.match(line)
            if match:
                macros[match.group(1)] = (match.group(2) or "").strip()
        elif word == "undef":
            macros.pop(rest, None)

    def resolve(name: str, depth: int = 0) -> int | None:
        value = macros.get(name, "")
        if re.fullmatch(r"\d+", value):
            return int(value)
        if depth < 8 and re.fullmatch(r"__NR\w+", value):
            return resolve(value, depth + 1)
        return None

    table: dict[str, int] = {}
    for macro in macros:
        if not macro.startswith("__NR_") or macro in ("__NR_syscalls",):
            continue
        nr = resolve(macro)
        if nr is not None:
            table[macro[len("__NR_") :]] = nr
    return table


def kernel_version(src: Path) -> str:
    """Read VERSION.PATCHLEVEL.SUBLEVEL from the kernel's top-level Makefile.

    Args:
        src: the kernel tree.

    Returns:
        The version string, or ``"unknown"`` without a Makefile.
    """
    makefile = src / "Makefile"
    if not makefile.exists():
        return "unknown"
    fields: dict[str, str] = {}
    for line in makefile.read_text().splitlines()[:10]:
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip()
    version = ".".join(fields.get(k, "0") for k in ("VERSION", "PATCHLEVEL", "SUBLEVEL"))
    return version + fields.get("EXTRAVERSION", "")


def arm64_table(src: Path) -> tuple[dict[str, int], list[str]]:
    """Build the aarch64 table from whichever description the tree has.

    Args:
        src: the kernel tree.

    Returns:
        The table and the list of files it was read from (relative to ``src``).
    """
    abis_mk = src / "arch/arm64/kernel/Makefile.syscalls"
    if abis_mk.exists():
        abis = {"common", "64"}
        tbl_name = "scripts/syscall.tbl"
        for line in abis_mk.read_text().splitlines():
            match = re.match(r"\s*syscall_abis_64\s*\+?=\s*(.*)", line)
            if match:
                abis.update(match.group(1).split())
            # 7.x: arm64 keeps its own copy of the table (``syscalltbl = ..._%.tbl``)
            match = re.match(r"\s*syscalltbl\s*:?=\s*(\S+)", line)
            if match:
                tbl_name = match.group(1).replace("%", "64")
        tbl = src / tbl_name
        if tbl.exists():
            return parse_tbl(tbl, abis), [tbl_name, "arch/arm64/kernel/Makefile.syscalls"]
    arch_header = src / "arch/arm64/include/uapi/asm/unistd.h"
    predefined = {"__BITS_PER_LONG": "64"}
    for line in arch_header.read_text().splitlines():
        match = _DEFINE.match(line.strip())
        if match and match.group(1).startswith("__ARCH_WANT_"):
            predefined[match.group(1)] = match.group(2) or ""
    generic = src / "include/uapi/asm-generic/unistd.h"
    return parse_generic_unistd(generic, predefined), [
        "include/uapi/asm-generic/unistd.h",
        "arch/arm64/include/uapi/asm/unistd.h",
    ]


def write_table(
    out: Path, arch: str, *, table: dict[str, int], files: list[str], version: str, source: str
) -> None:
    """Write one ``syscalls_<arch>.json`` deterministically.

    Args:
        out: the output directory.
        arch: the nscg architecture name.
        table: name → number.
        files: the kernel files the table was read from.
        version: the kernel version.
        source: where the kernel tree came from.
    """
    data = {
        "arch": arch,
        "audit_arch": AUDIT_ARCH[arch],
        "kernel_version": version,
        "source": source,
        "files": files,
        "generator": "tools/gen_syscall_tables.py",
        "syscalls": dict(sorted(table.items(), key=lambda item: (item[1], item[0]))),
    }
    path = out / f"syscalls_{arch}.json"
    path.write_text(json.dumps(data, indent=1) + "\n")
    print(f"{path}: {len(table)} syscalls from Linux {version}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("kernel_src", type=Path, help="an unpacked Linux source tree")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent.parent / "src/nscg/seccomp/_data",
        help="output directory (default: src/nscg/seccomp/_data)",
    )
    parser.add_argument("--source", default="", help="where the kernel tree came from")
    args = parser.parse_args(argv)
    src: Path = args.kernel_src
    version = kernel_version(src)
    source = args.source or f"Linux {version} source tree"
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    tbl64 = "arch/x86/entry/syscalls/syscall_64.tbl"
    tbl32 = "arch/x86/entry/syscalls/syscall_32.tbl"
    meta = {"version": version, "source": source}
    x86_64 = parse_tbl(src / tbl64, {"common", "64"})
    write_table(out, "x86_64", table=x86_64, files=[tbl64], **meta)
    i386 = parse_tbl(src / tbl32, {"i386"})
    write_table(out, "i386", table=i386, files=[tbl32], **meta)
    x32 = {n: nr | X32_SYSCALL_BIT for n, nr in parse_tbl(src / tbl64, {"common", "x32"}).items()}
    write_table(out, "x32", table=x32, files=[tbl64], **meta)
    aarch64, files = arm64_table(src)
    write_table(out, "aarch64", table=aarch64, files=files, **meta)
    return 0


if __name__ == "__main__":
    sys.exit(main())
