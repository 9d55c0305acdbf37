"""The client is its own distribution (issue 13, item 1): Python 3.9 syntax, nothing of the server,
the conventions loadable without the client's dependencies, the server sharing them."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "batch_outputs"
MODULES = sorted(PACKAGE.rglob("*.py"))
SERVER_PACKAGES = ("fastapi", "starlette", "uvicorn", "azure-functions", "azure-data-tables", "azure-eventgrid")


@pytest.mark.parametrize("module", MODULES, ids=lambda p: p.name)
def test_every_module_parses_as_python_3_9(module: Path) -> None:
    # No interpreter of 3.9 is assumed here (see test_client_wheel for a real run): the grammar is.
    source = module.read_text(encoding="utf-8")
    tree = ast.parse(source, feature_version=(3, 9))
    # cli.py keeps its annotations evaluated: typer reads them at run time (older typer cannot resolve postponed ones)
    if (module.name not in ("__main__.py", "cli.py") and not module.name.startswith("_cli_")) or module.name == "_cli_config.py":
        assert "from __future__ import annotations" in source
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for decorator in node.decorator_list:
                keywords = decorator.keywords if isinstance(decorator, ast.Call) else []
                assert not {k.arg for k in keywords} & {"slots", "kw_only"}, f"{module.name}: dataclass options of 3.10"
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "zip":
            assert not any(k.arg == "strict" for k in node.keywords), f"{module.name}: zip(strict=) is 3.10"


@pytest.mark.parametrize("module", MODULES, ids=lambda p: p.name)
def test_modules_and_functions_stay_small(module: Path) -> None:
    source = module.read_text(encoding="utf-8")
    assert len(source.splitlines()) <= 450
    long_functions = [node.name for node in ast.walk(ast.parse(source))
                      if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno + 1 > 80]
    assert long_functions == []


@pytest.mark.parametrize("module", MODULES, ids=lambda p: p.name)
def test_the_client_imports_nothing_of_the_server(module: Path) -> None:
    for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
            [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
        for name in names:
            assert name.split(".")[0] not in ("shared", "functions", "devtools", "fastapi", "starlette", "uvicorn"), name


def test_the_conventions_load_without_the_client_s_dependencies() -> None:
    script = ("import sys, batch_outputs.conventions, batch_outputs.environment, shared.conventions, shared.domain.conventions\n"
              "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('azure', 'typer', 'rich', 'httpx', 'click'))\n"
              "assert shared.conventions.container_name is batch_outputs.conventions.container_name\n"
              "assert shared.domain.conventions.parse_blob_path is batch_outputs.conventions.parse_blob_path\n"
              "print(loaded)")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_public_names_load_on_first_use() -> None:
    import batch_outputs

    for name in batch_outputs.__all__:
        assert getattr(batch_outputs, name) is not None
    with pytest.raises(AttributeError):
        batch_outputs.NoSuchThing  # noqa: B018


def test_the_distribution_is_the_client_with_client_dependencies_only() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    meta = project["project"]
    assert meta["name"] == "batch-outputs" and meta["requires-python"] == ">=3.9"
    assert project["tool"]["setuptools"]["packages"] == ["batch_outputs", "batch_outputs.aio"]
    assert meta["scripts"] == {"batch-outputs": "batch_outputs.cli:main"}
    required = {d.split(">")[0].split("<")[0].split("=")[0].strip().lower() for d in meta["dependencies"]}
    assert required == {"azure-core", "azure-storage-blob", "azure-identity", "jmespath", "requests", "rich", "typer"}
    assert not required & set(SERVER_PACKAGES)


def test_the_function_app_deploys_the_conventions_it_imports() -> None:
    ignored = {line.strip().rstrip("/") for line in (ROOT / ".funcignore").read_text(encoding="utf-8").splitlines()}
    assert "batch_outputs" not in ignored


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX shell")
def test_the_install_script_is_valid_shell() -> None:
    script = ROOT / "packaging" / "batch-package" / "install.sh"
    assert subprocess.run(["sh", "-n", str(script)], capture_output=True, check=False).returncode == 0
