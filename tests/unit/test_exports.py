"""The one export list (``nscg._EXPORTS``): ``__all__``, the lazy attributes, the
TYPE_CHECKING block type checkers read and the API page all name the same set."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import nscg

ROOT = Path(__file__).resolve().parents[2]
INIT = Path(nscg.__file__)
API = ROOT / "docs" / "api.md"


def _type_checking_imports() -> dict[str, str]:
    """name -> module of every import in ``if TYPE_CHECKING:`` of nscg/__init__.py."""
    tree = ast.parse(INIT.read_text())
    found: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name):
            if node.test.id != "TYPE_CHECKING":
                continue
            for imp in node.body:
                assert isinstance(imp, ast.ImportFrom) and imp.module, ast.dump(imp)
                for alias in imp.names:
                    # "X as X": re-exported under mypy --strict (no implicit re-export)
                    assert alias.asname == alias.name, f"{alias.name}: import it 'as' itself"
                    found[alias.name] = imp.module
    return found


def _exports_doc() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "nscg_exports", ROOT / "docs" / "_ext" / "nscg_exports.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_all_and_type_checking_block_follow_the_export_list() -> None:
    assert nscg.__all__ == list(nscg._EXPORTS)
    assert len(set(nscg.__all__)) == len(nscg.__all__)
    assert _type_checking_imports() == nscg._EXPORTS


def test_every_name_resolves_to_its_module() -> None:
    for name, module in nscg._EXPORTS.items():
        mod = importlib.import_module(module)
        assert getattr(nscg, name) is getattr(mod, name), name
        assert name in mod.__all__, f"{name} is not in {module}.__all__"
        value = getattr(nscg, name)
        if inspect.isclass(value) and issubclass(value, BaseException):
            assert value.__module__ == "nscg", name  # pickles as nscg.X
        elif inspect.isclass(value) or inspect.isfunction(value):
            assert value.__module__ == module, name


def test_the_design_cards_objects_are_at_the_top_level() -> None:
    for name in ("Namespace", "CgroupV2", "Capabilities", "Seccomp", "RootFS", "Container"):
        assert name in nscg._EXPORTS
    assert {"Limits", "SpawnOptions", "RunOptions", "ExecutablePermissionError"} <= set(
        nscg.__all__
    )


def test_api_page_is_made_from_the_export_list() -> None:
    doc = _exports_doc()
    page = API.read_text()
    assert doc.MARKER in page
    table = doc.exports_table()
    for name, module in nscg._EXPORTS.items():
        assert f"`{name}`" in table
        if module.startswith("nscg._"):  # a private module: under the public name
            assert any(f".. auto{k}:: nscg.{name}\n" in page for k in ("class", "function"))
            continue
        assert f"{{mod}}`{module}`" in table
        # the module that defines it has its section, whose members autodoc lists
        assert f".. automodule:: {module}\n" in page, module
        if module == "nscg.errors":  # documented one by one, under the public name
            assert f".. autoexception:: nscg.{name}\n" in page, name
    # no hand-written list of names left beside the generated one
    assert "| name | defined in |" not in page


def test_features_stays_the_function() -> None:
    """No submodule is named like an export: importing it would replace the export."""
    code = "import nscg; nscg.Features; print(callable(nscg.features), type(nscg.features))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.startswith("True <class 'function'>"), out
    package = INIT.parent
    for name in nscg._EXPORTS:
        assert not (package / f"{name}.py").exists() and not (package / name).is_dir(), name


def test_import_nscg_loads_no_submodule() -> None:
    """``import nscg`` stays cheap (PEP 562): nothing but the package itself."""
    code = "import nscg, sys; print(sorted(m for m in sys.modules if m.startswith('nscg')))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "['nscg']"
