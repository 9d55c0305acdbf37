"""Every code block of README.md and docs/ marked runnable runs as written, from a scratch folder,
in a virtual environment with only the `batch-outputs` wheel installed (issue 22).

A block is marked by an HTML comment on the line before its fence, which Markdown renders as
nothing::

    <!-- runnable -->
    ```python
    ...
    ```

The blocks of one document run in order, each as its own script, against a stack of their own: a
fresh Azurite, the app, and the local event source in front of Azurite's blob endpoint (so an
upload is indexed as under ``make run``). The local stack's well-known addresses in a block are
those of this stack: ``UseDevelopmentStorage=true`` becomes the event source's connection string
and ``http://127.0.0.1:7071`` the app's URL; the app accepts the sample's key, ``local-dev-key``.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from devtools.azurite import Azurite
from devtools.event_feed import EventFeed, Webhook
from devtools.event_proxy import EventProxy

from ..support.stack import EVENTS_KEY, TEST_KEY, RunningApp, settings_for
from .test_client_wheel import clean_env, installed_venv, wheel  # noqa: F401  (wheel is a fixture)

ROOT = Path(__file__).resolve().parents[2]
MARKER = "<!-- runnable -->"
LOCAL_KEY = "local-dev-key"
_BLOCK = re.compile(r"^" + re.escape(MARKER) + r"[ \t]*\n```python[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def runnable_blocks(text: str) -> list[str]:
    """The Python blocks marked runnable, in order."""
    return [match.group(1) for match in _BLOCK.finditer(text)]


MARKED = [doc for doc in DOCUMENTS if runnable_blocks(doc.read_text("utf-8"))]


def test_every_marker_stands_before_a_python_block() -> None:
    for doc in DOCUMENTS:
        text = doc.read_text("utf-8")
        assert text.count(MARKER) == len(runnable_blocks(text)), f"{doc.name}: a {MARKER} not right before a ```python fence"
    assert ROOT / "README.md" in MARKED  # the README's first example is one of them


@pytest.fixture(scope="module")
def wheel_python(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    """The Python of a clean virtual environment with only the wheel (and its dependencies)."""
    return installed_venv("python3", wheel, tmp_path_factory.mktemp("docs-venv") / "v").parent / "python"


@pytest.mark.parametrize("doc", MARKED, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_the_runnable_blocks_run_as_written(doc: Path, wheel_python: Path, serve: Callable[..., RunningApp], tmp_path: Path) -> None:
    azurite = Azurite(location=tmp_path / "azurite", in_memory=True).start()
    try:
        app = serve(settings_for(azurite, API_KEYS=f"{LOCAL_KEY},{TEST_KEY}"))
        proxy = EventProxy(f"http://127.0.0.1:{azurite.blob_port}", EventFeed(Webhook(f"{app.url}/api/events", EVENTS_KEY))).start()
        try:
            scratch = tmp_path / "scratch"
            scratch.mkdir()
            for n, block in enumerate(runnable_blocks(doc.read_text("utf-8"))):
                code = block.replace("UseDevelopmentStorage=true", proxy.connection_string()).replace("http://127.0.0.1:7071", app.url)
                script = scratch / f"block{n + 1}.py"
                script.write_text(code, "utf-8")
                result = subprocess.run([str(wheel_python), script.name], cwd=scratch, env=clean_env(), capture_output=True, text=True,
                                        timeout=180, check=False)
                assert result.returncode == 0, (doc.name, n + 1, block, result.stdout[-2000:], result.stderr[-3000:])
        finally:
            proxy.stop()
    finally:
        azurite.stop()
