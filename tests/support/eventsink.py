"""A tiny Event Grid topic stand-in for tests: records what is published to it over HTTP."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Post:
    path: str
    headers: dict[str, str]
    body: object
    status: int


@dataclass
class EventSink:
    """Answers ``fail_with`` (e.g. 500) while it is set, else 200; records every post."""

    fail_with: int | None = None
    posts: list[Post] = field(default_factory=list)
    #: Record only posts carrying events of this type (others are answered, not recorded).
    only_type: str | None = None

    def start(self) -> EventSink:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                status = sink.fail_with or 200
                events = json.loads(body)
                if sink.only_type is None or any(e.get("type") == sink.only_type for e in events):
                    sink.posts.append(Post(self.path, {k.lower(): v for k, v in self.headers.items()}, events, status))
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/api/events"

    @property
    def delivered(self) -> list[dict]:
        """Events of the posts that were answered 200."""
        return [event for post in self.posts if post.status == 200 for event in post.body]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
