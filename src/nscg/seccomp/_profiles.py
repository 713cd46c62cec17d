"""OCI runtime-spec / Docker seccomp profiles: filtering by caps, arches, kernel; loading."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from nscg.errors import SpecError
from nscg.seccomp._rules import Action, ArgCmp, CmpOp, Rule
from nscg.seccomp._tables import _GOARCH, Arch

if TYPE_CHECKING:
    from nscg.seccomp._spec import Seccomp


def _norm_cap(cap: object) -> str:
    name = cap if isinstance(cap, str) else getattr(cap, "name", None)
    if not isinstance(name, str):
        raise SpecError(f"capability must be a name like 'CAP_SYS_ADMIN', not {cap!r}")
    name = name.upper()
    return name if name.startswith("CAP_") else "CAP_" + name


def _parse_version(text: str) -> tuple[int, ...]:
    from nscg._host import parse_release

    return parse_release(str(text))


def _kernel_release() -> str:
    from nscg._host import kernel_release

    return kernel_release()


# --------------------------------------------------------------------------- OCI profiles


def _str_list(value: object, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SpecError(f"{what} must be a list of strings")
    return list(value)


def _opt_int(value: object, what: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise SpecError(f"{what} must be an integer")
    return value


def _filter_passes(
    entry: Mapping[str, object], caps: frozenset[str], arch: Arch, kernel: tuple[int, ...]
) -> bool:
    goarch = _GOARCH[arch]
    excludes = entry.get("excludes") or {}
    includes = entry.get("includes") or {}
    if not isinstance(excludes, Mapping) or not isinstance(includes, Mapping):
        raise SpecError("includes/excludes must be objects")
    if goarch & set(_str_list(excludes.get("arches"), "excludes.arches")):
        return False
    if {_norm_cap(c) for c in _str_list(excludes.get("caps"), "excludes.caps")} & caps:
        return False
    min_ex = excludes.get("minKernel")
    if min_ex and kernel >= _parse_version(str(min_ex)):
        return False
    inc_arches = _str_list(includes.get("arches"), "includes.arches")
    if inc_arches and not goarch & set(inc_arches):
        return False
    inc_caps = {_norm_cap(c) for c in _str_list(includes.get("caps"), "includes.caps")}
    if not inc_caps <= caps:
        return False
    min_in = includes.get("minKernel")
    return not (min_in and kernel < _parse_version(str(min_in)))


def _load_oci(
    cls: type[Seccomp],
    data: Mapping[str, object],
    *,
    capabilities: frozenset[str],
    arch: Arch,
    kernel: tuple[int, ...],
    multiarch: bool,
) -> Seccomp:
    if "defaultAction" not in data:
        raise SpecError("seccomp profile has no defaultAction")
    default = Action.from_oci(
        str(data["defaultAction"]), _opt_int(data.get("defaultErrnoRet"), "defaultErrnoRet")
    )
    arches: list[Arch] = [arch]
    if multiarch:
        names = _str_list(data.get("architectures"), "architectures")
        arch_map = data.get("archMap") or []
        if not isinstance(arch_map, list):
            raise SpecError("archMap must be a list")
        for item in arch_map:
            if not isinstance(item, Mapping):
                raise SpecError("archMap entries must be objects")
            try:
                main = Arch.parse(str(item.get("architecture", "")))
            except SpecError:
                continue
            if main is arch:
                names += _str_list(item.get("subArchitectures"), "subArchitectures")
        for name in names:
            try:
                extra = Arch.parse(name)
            except SpecError:
                continue  # x32, arm, mips...: not supported, calls from there are killed
            if extra not in arches:
                arches.append(extra)
    syscalls = data.get("syscalls") or []
    if not isinstance(syscalls, list):
        raise SpecError("syscalls must be a list")
    rules: list[Rule] = []
    for entry in syscalls:
        if not isinstance(entry, Mapping):
            raise SpecError("syscalls entries must be objects")
        names = _str_list(entry.get("names"), "names")
        if isinstance(entry.get("name"), str):
            names.append(str(entry["name"]))
        if not _filter_passes(entry, capabilities, arch, kernel):
            continue
        action = Action.from_oci(
            str(entry.get("action", "")), _opt_int(entry.get("errnoRet"), "errnoRet")
        )
        if action == default:
            continue
        raw_args = entry.get("args") or []
        if not isinstance(raw_args, list):
            raise SpecError("args must be a list")
        cmps: list[ArgCmp] = []
        for raw in raw_args:
            if not isinstance(raw, Mapping):
                raise SpecError("args entries must be objects")
            index = _opt_int(raw.get("index"), "args.index")
            value = _opt_int(raw.get("value"), "args.value") or 0
            value_two = _opt_int(raw.get("valueTwo"), "args.valueTwo") or 0
            op = CmpOp.from_oci(str(raw.get("op", "")))
            if index is None:
                raise SpecError("args entry without index")
            if op is CmpOp.MASKED_EQ:
                cmps.append(ArgCmp(index, op, value_two, value))
            else:
                cmps.append(ArgCmp(index, op, value))
        indexes = [c.index for c in cmps]
        groups = [(c,) for c in cmps] if len(set(indexes)) < len(indexes) else [tuple(cmps)]
        for name in names:
            for group in groups:
                rules.append(Rule(name, action, group, optional=True))
    return cls(default, tuple(rules), tuple(arches))
