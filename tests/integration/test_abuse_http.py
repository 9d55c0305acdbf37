"""The HTTP edge under abuse (issue 14), over real sockets: the Host header never makes a link,
bodies are refused while they arrive, slow clients are cut off, logs hold no secret and no
forged line; and the server as ``make run`` starts it."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator

import httpx
import pytest
import uvicorn
from uvicorn.logging import AccessFormatter

from devtools.azurite import free_port
from devtools.run import MAX_HEAD_BYTES, UVICORN_OPTIONS, GuardedH11Protocol, GuardedHttpToolsProtocol, delivery_key, session_events_key
from shared.conventions import container_name
from shared.domain.events import MAX_PAYLOAD_BYTES
from shared.http.app import create_app
from shared.http.routes import events as events_route
from shared.settings import PROJECT_ROOT

from ..helpers import LOCAL_TOPIC, blob_event, eventually
from ..support.stack import EVENTS_KEY, TEST_KEY, RunningApp, settings_for

JOB = "EdgeJob"
C = container_name(JOB)
#: Bounds a hang only: every wait below ends on an event (an answer, a close), not on time.
HANG = 60


def exchange(port: int, request: bytes, *, then_wait: bool = True) -> bytes:
    """Send raw bytes, read until the server closes (or HANG seconds pass)."""
    with socket.create_connection(("127.0.0.1", port), timeout=HANG) as sock:
        sock.sendall(request)
        chunks = []
        while then_wait:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)


def port_of(app: RunningApp) -> int:
    return int(app.url.rsplit(":", 1)[1])


# -- links and redirects never come from Host ------------------------------------------------


def test_next_link_is_relative_whatever_the_host_header(app: RunningApp) -> None:
    app.post_events([blob_event(C, f"t1/$TaskOutput/{n}", sequencer=n + 1) for n in range(3)])
    body = app.get(f"/api/jobs/{JOB}/task-outputs", params={"maxpagesize": 1, "code": TEST_KEY},
                   headers={"host": "evil.example", "x-forwarded-host": "evil.example"}).json()
    assert body["nextLink"].startswith(f"/api/jobs/{JOB}/task-outputs?") and "evil" not in body["nextLink"]
    assert "code=" not in body["nextLink"]
    assert len(app.all_pages(f"/api/jobs/{JOB}/task-outputs", maxpagesize=1)) == 3


def test_next_link_is_built_on_the_public_base_url(serve: Callable[..., RunningApp], azurite) -> None:
    app = serve(settings_for(azurite, PUBLIC_BASE_URL="https://outputs.contoso.example/"))
    app.post_events([blob_event(C, f"t1/$TaskOutput/{n}", sequencer=n + 1) for n in range(2)])
    body = app.get("/api/jobs", params={"maxpagesize": 1}, headers={"host": "evil.example"}).json()
    link = app.get(f"/api/jobs/{JOB}/tasks/t1/outputs", params={"maxpagesize": 1}, headers={"host": "evil.example"}).json()["nextLink"]
    assert link.startswith(f"https://outputs.contoso.example/api/jobs/{JOB}/tasks/t1/outputs?")
    assert "nextLink" not in body or body["nextLink"].startswith("https://outputs.contoso.example/")


def test_no_redirect_is_built_from_the_host_header(app: RunningApp) -> None:
    for path in ("/api/jobs/", f"/api/jobs/{JOB}/"):
        response = app.get(path, headers={"host": "evil.example"}, follow_redirects=False)
        assert response.status_code == 404 and "location" not in response.headers, path
    ui = app.get("/ui", params={"x": "1"}, headers={"host": "evil.example"}, follow_redirects=False)
    assert ui.status_code == 307 and ui.headers["location"] == "/ui/?x=1"


def test_answers_that_carry_links_are_not_stored_by_caches(app: RunningApp) -> None:
    app.post_events([blob_event(C, "t1/$TaskOutput/a.txt", sequencer=1)])
    for path in (f"/api/jobs/{JOB}/tasks/t1/outputs/TaskOutput/a.txt", f"/api/jobs/{JOB}/task-outputs", f"/api/jobs/{JOB}"):
        response = app.get(path)
        assert response.status_code == 200 and response.headers["cache-control"] == "no-store", path


# -- bodies refused while they arrive --------------------------------------------------------


def head(content_length: int | None, key: str = EVENTS_KEY) -> bytes:
    length = f"Content-Length: {content_length}\r\n" if content_length is not None else "Transfer-Encoding: chunked\r\n"
    return (f"POST /api/events HTTP/1.1\r\nHost: x\r\nx-functions-key: {key}\r\nContent-Type: application/json\r\n"
            f"{length}\r\n").encode()


def test_a_declared_400_mb_body_is_refused_before_a_byte_is_read(app: RunningApp) -> None:
    answer = exchange(port_of(app), head(400 * 1024 * 1024))  # headers only: the server must not wait for the body
    assert answer.startswith(b"HTTP/1.1 413 ") and b"PayloadTooLarge" in answer


def test_a_streamed_body_is_refused_as_soon_as_it_passes_the_limit(app: RunningApp) -> None:
    """Chunked, no length given: 413 once past 16 MiB, while the client still holds the rest."""
    chunk = b"[" + b" " * (1024 * 1024 - 1)
    with socket.create_connection(("127.0.0.1", port_of(app)), timeout=HANG) as sock:
        sock.sendall(head(None))
        sent = 0
        while sent <= MAX_PAYLOAD_BYTES:  # never the end of the body: the answer must not wait for it
            piece = chunk[: min(len(chunk), MAX_PAYLOAD_BYTES + 1 - sent)]
            sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            sent += len(piece)
        answer = sock.recv(65536)
        rest = sock.recv(65536)
        while rest:
            answer += rest
            rest = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413 ") and b"connection: close" in answer.lower()


def test_an_unauthorized_body_is_never_read(app: RunningApp) -> None:
    answer = exchange(port_of(app), head(400 * 1024 * 1024, key="wrong"))
    assert answer.startswith(b"HTTP/1.1 401 ")


def test_a_body_trickling_past_its_deadline_gets_408(app: RunningApp, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events_route, "BODY_READ_SECONDS", 0.2)
    answer = exchange(port_of(app), head(100) + b'[{"eventType":')  # 86 bytes never come
    assert answer.startswith(b"HTTP/1.1 408 ") and b"RequestTimeout" in answer


# -- slow clients: the server as make run starts it ------------------------------------------


class QuickGuard(GuardedH11Protocol):
    header_timeout = 0.2


class QuickHttpToolsGuard(GuardedHttpToolsProtocol):
    header_timeout = 0.2


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:
        pass


def test_make_run_serves_the_guarded_httptools_protocol() -> None:
    assert UVICORN_OPTIONS[UVICORN_OPTIONS.index("--http") + 1] == "devtools.run:GuardedHttpToolsProtocol"


@contextlib.contextmanager
def _served(settings, protocol: type) -> Iterator[int]:
    port = free_port()
    server = _Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, http=protocol,
                                    timeout_keep_alive=HANG, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    assert eventually(lambda: server.started, within=HANG)
    yield port
    server.should_exit = True
    thread.join(timeout=HANG)


@pytest.fixture(params=[QuickHttpToolsGuard, QuickGuard], ids=["httptools", "h11"])
def guarded(settings, request: pytest.FixtureRequest) -> Iterator[int]:
    """The app behind make run's protocol (httptools; and the h11 one, with the same guard), with
    a short header deadline, on a free port."""
    with _served(settings, request.param) as port:
        yield port


@pytest.fixture
def guarded_httptools(settings) -> Iterator[int]:
    """The app behind make run's protocol only."""
    with _served(settings, QuickHttpToolsGuard) as port:
        yield port


def test_a_connection_that_never_finishes_its_headers_is_closed(guarded: int) -> None:
    answer = exchange(guarded, b"GET /api/health HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # and nothing more, ever
    assert answer == b""  # closed by the server, not answered


def test_an_idle_connection_is_closed_and_a_prompt_one_served(guarded: int) -> None:
    assert exchange(guarded, b"") == b""  # connected, never sent a byte
    with socket.create_connection(("127.0.0.1", guarded), timeout=HANG) as sock:
        for _ in range(2):  # keep-alive: a second request on the same connection is served
            sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            while not answer.endswith(b'{"status":"ok"}'):
                data = sock.recv(65536)
                assert data, answer
                answer += data
            assert answer.startswith(b"HTTP/1.1 200 ")
        assert sock.recv(65536) == b""  # then idle: closed (header deadline re-armed after the answer)


def _read_answer(sock: socket.socket, ending: bytes) -> bytes:
    answer = b""
    while not answer.endswith(ending):
        data = sock.recv(65536)
        assert data, answer
        answer += data
    return answer


def test_a_request_answered_after_the_header_deadline_is_not_cut(guarded: int) -> None:
    """A long-poll outlives the head deadline: the deadline is for heads, not for answers. The
    request (an unknown job's feed, waiting 1 s: ten deadlines) is answered, then the connection
    serves another."""
    with socket.create_connection(("127.0.0.1", guarded), timeout=HANG) as sock:
        sock.sendall(f"GET /api/jobs/NoSuchJob/changes?wait=1 HTTP/1.1\r\nHost: x\r\nx-functions-key: {TEST_KEY}\r\n\r\n".encode())
        answer = _read_answer(sock, b"}")
        assert answer.startswith(b"HTTP/1.1 200 ") and b'"value":[]' in answer
        sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_answer(sock, b'{"status":"ok"}').startswith(b"HTTP/1.1 200 ")


@pytest.mark.parametrize("pieces", [1, 40], ids=["at-once", "in-pieces"])
def test_a_request_head_past_16_kib_is_refused(guarded_httptools: int, pieces: int) -> None:
    """The httptools parser has no cap of its own: a head past 16 KiB, sent at once or in pieces,
    is refused and never reaches the app. (h11 caps only a head still incomplete at 16 KiB, so a
    longer head in one read passes it.)"""
    guarded = guarded_httptools
    head = b"GET /api/health HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-Pad-%d: %s\r\n" % (n, b"a" * 1000) for n in range(20)) + b"\r\n"
    assert len(head) > MAX_HEAD_BYTES
    with socket.create_connection(("127.0.0.1", guarded), timeout=HANG) as sock:
        size = -(-len(head) // pieces)
        try:
            for at in range(0, len(head), size):
                sock.sendall(head[at : at + size])
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed while the rest was still being sent: what is checked below
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            while data := sock.recv(65536):
                answer += data
    assert b'"status":"ok"' not in answer
    assert answer == b"" or answer.startswith((b"HTTP/1.1 431 ", b"HTTP/1.1 400 ")), answer


# -- logs ------------------------------------------------------------------------------------


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """uvicorn's access log with uvicorn's formatter, and the app's own records."""
    stream = io.StringIO()
    access = logging.StreamHandler(stream)
    access.setFormatter(AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s'))
    plain = logging.StreamHandler(stream)
    plain.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    loggers = [(logging.getLogger("uvicorn.access"), access), (logging.getLogger("shared"), plain)]
    levels = [logger.level for logger, _ in loggers]
    for logger, handler in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    yield stream
    for (logger, handler), level in zip(loggers, levels, strict=True):
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_keys_and_forged_lines_never_reach_the_logs(settings, captured: io.StringIO) -> None:
    port = free_port()
    server = _Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_config=None,
                                    access_log=True, log_level="info", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    assert eventually(lambda: server.started, within=HANG)
    try:
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/api/jobs", params={"code": TEST_KEY}).status_code == 200
        assert httpx.get(f"{base}/api/jobs", params={"code": "a-wrong-guess-of-a-key"}).status_code == 401
        forged = blob_event(C, "t1/$TaskOutput/a.txt", sequencer=1)
        forged["id"] = "e1\nCRITICAL shared forged: every output deleted"
        forged["topic"] = LOCAL_TOPIC.replace("devstoreaccount1", "attacker")
        assert httpx.post(f"{base}/api/events", json=[forged], params={"code": EVENTS_KEY}).json()["skipped"] == 1
    finally:
        server.should_exit = True
        thread.join(timeout=HANG)
    text = captured.getvalue()
    assert "code=***" in text and "skipped event" in text  # the lines are there...
    for secret in (TEST_KEY, EVENTS_KEY, "a-wrong-guess-of-a-key"):
        assert secret not in text  # ...without the keys
    assert not [line for line in text.splitlines() if line.startswith("CRITICAL")]
    assert "\\x0aCRITICAL shared forged" in text


def test_make_run_serves_with_an_events_key_and_logs_no_key(azurite, tmp_path) -> None:
    """The server command line of make run, as a process, with its access log on."""
    settings = settings_for(azurite)
    assert delivery_key(settings) == EVENTS_KEY
    env = {k: v for k, v in os.environ.items() if k not in ("API_KEYS", "EVENTS_KEYS")}
    assert session_events_key(settings_for(azurite, EVENTS_KEYS=""), env).startswith("session-") and env["EVENTS_KEYS"]
    port = free_port()
    env.update({"OUTPUTS_STORAGE": azurite.connection_string, "INDEX_STORAGE": azurite.connection_string,
                "INDEX_TABLE": settings.index_table, "API_KEYS": TEST_KEY, "EVENTS_KEYS": EVENTS_KEY, "PYTHONUNBUFFERED": "1"})
    log_file = tmp_path / "server.log"
    with log_file.open("wb") as out:
        server = subprocess.Popen([sys.executable, "-m", "uvicorn", "shared.http.app:create_app", "--factory", "--host", "127.0.0.1",
                                   "--port", str(port), "--log-level", "info", *UVICORN_OPTIONS],
                                  cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            base = f"http://127.0.0.1:{port}"

            def up() -> bool:
                try:
                    return httpx.get(f"{base}/api/health").status_code == 200
                except httpx.HTTPError:
                    return server.poll() is not None
            assert eventually(up, within=HANG) and server.poll() is None, log_file.read_text()
            event = blob_event(C, "t1/$TaskOutput/run.txt", sequencer=1)
            assert httpx.post(f"{base}/api/events", json=[event], headers={"x-functions-key": EVENTS_KEY}).json()["indexed"] == 1
            assert httpx.post(f"{base}/api/events", json=[event], params={"code": TEST_KEY}).status_code == 401
            assert httpx.get(f"{base}/api/jobs/{JOB}/task-outputs", params={"code": TEST_KEY}).json()["value"][0]["path"] == "run.txt"
            assert "server" not in httpx.get(f"{base}/api/health").headers
        finally:
            server.terminate()
            server.wait(timeout=HANG)
    text = log_file.read_text()
    assert "/api/jobs/EdgeJob/task-outputs?code=***" in text, text
    assert TEST_KEY not in text and EVENTS_KEY not in text
