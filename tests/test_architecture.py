"""The house rules that keep the design honest, checked by walking the source."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import aiooss_resume

PACKAGE = Path(aiooss_resume.__file__).parent
PURE_CORE = [
    "_errors",
    "_models",
    "_events",
    "_crc64",
    "_planner",
    "_signing",
    "_xml",
    "_checkpoint",
    "_retry",
]
IO_MODULES = {"asyncio", "aiohttp", "aiofiles", "anyio", "socket", "ssl", "random"}


def imported_modules(module: str) -> set[str]:
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def runtime_imports(module: str) -> set[str]:
    """Imports outside ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            return
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return names


@pytest.mark.parametrize("module", PURE_CORE)
def test_pure_core_does_no_io(module: str) -> None:
    assert imported_modules(module) & IO_MODULES == set()
    source = (PACKAGE / f"{module}.py").read_text(encoding="utf-8")
    calls = {
        ast.unparse(node.func) for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Call)
    }
    assert calls & {"open", "os.open", "time.time", "time.monotonic", "datetime.now"} == set()


def test_only_the_http_module_imports_aiohttp_at_runtime() -> None:
    users = {
        path.stem
        for path in PACKAGE.glob("_*.py")
        if path.stem != "__main__" and "aiohttp" in runtime_imports(path.stem)
    }
    assert users == {"_http"}


def test_all_is_sorted_complete_and_documented() -> None:
    names = aiooss_resume.__all__
    assert names == sorted(names)
    public = {n for n in dir(aiooss_resume) if not n.startswith("_")} - {"annotations"}
    assert public <= set(names) | {
        name for name in public if inspect.ismodule(getattr(aiooss_resume, name))
    }
    for name in names:
        if name == "__version__":
            continue
        obj = getattr(aiooss_resume, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):  # type aliases have no __doc__
            assert inspect.getdoc(obj), f"{name} has no docstring"


@pytest.mark.parametrize("name", ["Client", "Bucket", "Credentials", "RetryPolicy"])
def test_public_classes_are_final(name: str) -> None:
    assert getattr(getattr(aiooss_resume, name), "__final__", False)
