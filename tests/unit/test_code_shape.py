"""The shape issue 10 set for the core: small modules, short functions, the public names kept."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
MODULES = sorted(SHARED.rglob("*.py"))
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 80


@pytest.mark.parametrize("module", MODULES, ids=lambda p: str(p.relative_to(SHARED)))
def test_modules_and_functions_stay_small(module: Path) -> None:
    source = module.read_text(encoding="utf-8")
    assert len(source.splitlines()) <= MAX_MODULE_LINES
    long_functions = [
        (node.name, node.end_lineno - node.lineno + 1)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert long_functions == []


def test_the_documented_import_path_of_container_name_still_works() -> None:
    from shared.conventions import container_name

    assert container_name("my-_EVEN_MORE_-terrific-job") == "job-my-even-more-te-68b05a7d8aa6aa65b9a6892c667a6c406a16ad65"


def test_the_domain_imports_no_sdk_and_no_web_framework() -> None:
    for module in sorted((SHARED / "domain").glob("*.py")):
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            for name in names:
                assert not name.startswith(("azure", "fastapi", "starlette")), f"{module.name} imports {name}"
