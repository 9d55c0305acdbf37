"""The client as a new user gets it (issue 13): its own wheel in a clean virtual environment, with
client dependencies only, round-tripping a file against the live app; and the Batch application
package installing without an index on the Pythons of Batch's Ubuntu images.

Slow by nature: it installs the wheel's dependencies from PyPI into fresh environments (pip's
cache makes a second run quicker). Interpreters other than the running one are used where this
machine has them (pyenv's 3.9, 3.10, 3.12) and skipped where it has not.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient

from devtools.azurite import Azurite
from shared.conventions import container_name

from ..helpers import real_blob_event
from ..support.stack import TEST_KEY, RunningApp

ROOT = Path(__file__).resolve().parents[2]
SERVER_PACKAGES = {"fastapi", "starlette", "uvicorn", "azure-functions", "azure-data-tables", "azure-eventgrid", "aiohttp"}
JOB = "wheel-job-1"


def interpreter(version: str) -> str | None:
    """A CPython ``version`` on this machine: on PATH, or one of pyenv's."""
    found = shutil.which(f"python{version}")
    if found and subprocess.run([found, "-c", "import venv"], capture_output=True, check=False).returncode == 0:
        return found
    for candidate in sorted(Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"), "versions").glob(f"{version}.*/bin/python")):
        return str(candidate)
    return None


def run(*args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, (args, result.stdout[-2000:], result.stderr[-2000:])
    return result


def distributions(python: Path) -> set[str]:
    """What is installed in an environment (it may have no pip)."""
    listing = run(python, "-c", "import importlib.metadata as m; print(*{d.metadata['Name'] for d in m.distributions()})",
                  env=clean_env()).stdout
    return {name.lower() for name in listing.split()}


def clean_env(**extra: str) -> dict[str, str]:
    """No PYTHONPATH, no project on the path, no Batch or CLI settings from the caller."""
    keep = {k: v for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "VIRTUAL_ENV") and not k.startswith(("AZ_BATCH_", "BATCH_OUTPUTS_"))}
    return {**keep, "COLUMNS": "200", **extra}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``make dist``'s command, into a folder of the test's own."""
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", "--no-deps", "--wheel-dir", out, ROOT)
    (built,) = out.glob("batch_outputs-*-py3-none-any.whl")
    with zipfile.ZipFile(built) as archive:
        names = archive.namelist()
        dist_info = built.name.split("-py3")[0] + ".dist-info"
        assert {name.split("/")[0] for name in names} == {"batch_outputs", dist_info}
        # Typed, with the aio client, its license, and the changelog in its description (issue 22).
        assert {"batch_outputs/py.typed", "batch_outputs/aio/__init__.py", f"{dist_info}/licenses/LICENSE"} <= set(names)
        metadata = archive.read(f"{dist_info}/METADATA").decode()
        assert "# Changelog" in metadata and "Project-URL: Changelog" in metadata and "Requires-Dist: jmespath" in metadata
    return built


def installed_venv(python: str, wheel: Path, where: Path) -> Path:
    run(python, "-m", "venv", where)
    run(where / "bin" / "python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check", wheel, env=clean_env())
    names = distributions(where / "bin" / "python")
    assert "batch-outputs" in names
    assert not names & SERVER_PACKAGES, names & SERVER_PACKAGES
    return where / "bin" / "batch-outputs"


@pytest.fixture(scope="module")
def cli_in_clean_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return installed_venv(sys.executable, wheel, tmp_path_factory.mktemp("venv") / "v")


def test_the_wheel_in_a_clean_venv_saves_lists_and_gets_a_file(cli_in_clean_venv: Path, app: RunningApp, azurite: Azurite,
                                                               blob_service: BlobServiceClient, tmp_path: Path) -> None:
    container = blob_service.get_container_client(container_name(JOB))
    if container.exists():
        container.delete_container()
    env = clean_env(BATCH_OUTPUTS_API=app.url, BATCH_OUTPUTS_KEY=TEST_KEY, BATCH_OUTPUTS_STORAGE=azurite.connection_string)
    assert "save" in run(cli_in_clean_venv, "--help", cwd=tmp_path, env=env).stdout
    run(cli_in_clean_venv, "prepare", JOB, cwd=tmp_path, env=env)
    (tmp_path / "result.bin").write_bytes(bytes(range(256)) * 10)
    saved = json.loads(run(cli_in_clean_venv, "save", "--job", JOB, "--task", "t1", "--kind", "TaskOutput", "result.bin", "--json",
                           cwd=tmp_path, env=env).stdout)
    assert saved["blobName"] == "t1/$TaskOutput/result.bin"
    event = real_blob_event(blob_service, container_name(JOB), saved["blobName"], 1)
    keys = getattr(app.settings, "events_keys", ()) or app.settings.api_keys
    assert app.post_events([event], headers={"x-functions-key": keys[0]}).status_code == 200
    (item,) = json.loads(run(cli_in_clean_venv, "ls", JOB, "--json", cwd=tmp_path, env=env).stdout)
    assert (item["taskId"], item["path"], item["size"]) == ("t1", "result.bin", 2560)
    run(cli_in_clean_venv, "get", JOB, "--task", "t1", "--kind", "TaskOutput", "result.bin", "-o", "copy.bin", cwd=tmp_path, env=env)
    assert (tmp_path / "copy.bin").read_bytes() == (tmp_path / "result.bin").read_bytes()


@pytest.mark.skipif(interpreter("3.9") is None, reason="no Python 3.9 on this machine")
def test_the_wheel_runs_on_python_3_9(wheel: Path, azurite: Azurite, tmp_path: Path) -> None:
    cli = installed_venv(interpreter("3.9") or "", wheel, tmp_path / "v39")
    env = clean_env(BATCH_OUTPUTS_STORAGE=azurite.connection_string, AZ_BATCH_JOB_ID="py39-job", AZ_BATCH_TASK_ID="jobrelease",
                    AZ_BATCH_NODE_ID="tvm-9")
    run(cli, "--help", env=env)
    python = cli.parent / "python"
    run(python, "-c", f"from batch_outputs import JobOutputStorage; JobOutputStorage.connect({azurite.connection_string!r}, 'py39-job').prepare()")
    (tmp_path / "logs.txt").write_text("from python 3.9")
    saved = json.loads(run(cli, "save", "--kind", "TaskLog", "logs.txt", "--json", cwd=tmp_path, env=env).stdout)
    assert saved["blobName"] == "jobrelease/$TaskLog/tvm-9/logs.txt"
    tracked = run(cli, "save", "--kind", "TaskLog", "--tracked", "--idle", "0.5", "--interval", "0.2", "logs.txt", "--as", "t.txt",
                  cwd=tmp_path, env=env)
    assert "jobrelease/$TaskLog/tvm-9/t.txt" in tracked.stdout


@pytest.fixture(scope="module")
def batch_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``make batch-package`` (with this interpreter's environment), copied to the test's own folder."""
    build = tmp_path_factory.mktemp("batch-package")
    run("make", "-C", ROOT, "--no-print-directory", "batch-package", f"BIN={Path(sys.executable).parent}", "STAMP=",
        env={**clean_env(), "MAKEFLAGS": ""})
    (package,) = (ROOT / "dist").glob("batch-outputs-*-batch-package.zip")
    shutil.copy(package, build / package.name)
    return build / package.name


@pytest.mark.parametrize("version", ["3.10", "3.12"])
def test_the_batch_application_package_installs_without_an_index(batch_package: Path, version: str, tmp_path: Path) -> None:
    python = interpreter(version)
    if python is None:
        pytest.skip(f"no Python {version} on this machine")
    unpacked = tmp_path / "app"
    with zipfile.ZipFile(batch_package) as archive:
        archive.extractall(unpacked)
        assert "install.sh" in archive.namelist()
    # No index at all: pip may only use the package's wheels.
    env = clean_env(PYTHON=python, BATCH_OUTPUTS_LINK_DIR="", PIP_INDEX_URL="http://127.0.0.1:9/none", PIP_FIND_LINKS="",
                    AZ_BATCH_NODE_SHARED_DIR=str(tmp_path / "shared"))
    (tmp_path / "shared").mkdir()
    result = run("sh", unpacked / "install.sh", env=env)
    cli = tmp_path / "shared" / "batch-outputs" / "bin" / "batch-outputs"
    assert str(cli) in result.stdout
    assert "prepare" in run(cli, "--help", env=clean_env()).stdout
    names = distributions(cli.parent / "python")
    assert "batch-outputs" in names and not names & SERVER_PACKAGES
