"""An ASGI app served by uvicorn on a loopback port in a thread, for tests where one service calls
another over real HTTP."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from gridloop.brokers.ports import free_port


@contextmanager
def serving(app: Any, port: int | None = None, lifespan: bool = False) -> Iterator[str]:
    """Serve `app` on `port` (default: a free one) until the block ends; its base URL. Without its
    lifespan by default: no consumer, relay or broker task starts, and the routes answer from the
    database alone."""
    port = port or free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="on" if lifespan else "off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the app did not start serving")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
