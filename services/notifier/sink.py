"""A local json:// webhook sink: what `gridloop up` points the demo notifications at, and prints.

Apprise's `json://host:port/path` posts `{"version", "title", "message", "type", …}`; the sink keeps
each message and hands it to a callback (the terminal, in `up`). It listens on loopback only.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    """One message as the sink got it."""

    path: str
    title: str
    body: str


class Sink:
    """An HTTP server on a loopback port that takes json:// notifications (start, url, stop)."""

    def __init__(self, on_message: Callable[[Received], None] | None = None, port: int = 0) -> None:
        self.received: list[Received] = []
        self.hits = 0
        """Posts taken, answered 200 or not."""
        self.on_message = on_message
        self.status = 200
        """What the sink answers (a test makes it 503 to play a channel that is down)."""
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                sink.hits += 1
                if sink.status != 200:
                    self.send_response(sink.status)
                    self.end_headers()
                    return
                try:
                    data: Any = json.loads(raw or b"{}")
                except ValueError:
                    data = {}
                item = Received(self.path, str(data.get("title", "")), str(data.get("message", "")))
                sink.received.append(item)
                if sink.on_message is not None:
                    sink.on_message(item)
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the callback is the output."""

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._thread = threading.Thread(target=self.server.serve_forever, name="notify-sink", daemon=True)

    @property
    def url(self) -> str:
        """The Apprise URL that reaches this sink."""
        return f"json://127.0.0.1:{self.server.server_address[1]}/"

    def start(self) -> Sink:
        """Serve in a daemon thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the port."""
        self.server.shutdown()
        self.server.server_close()


def terminal_line(item: Received) -> str:
    """How `gridloop up` prints a notification: a bell, the title, the text indented."""
    text = "\n".join(f"      {line}" for line in item.body.splitlines())
    return f"\n  🔔 通知 {item.title}\n{text}\n"
