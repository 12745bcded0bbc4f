"""A real uvicorn server on a free port, in a thread of the test process, and a model folder to serve."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import requests


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def live_server(app, *, timeout: float = 120.0):
    """Serve `app` with uvicorn on 127.0.0.1 and a free port; yields its base URL."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.05)
    try:
        assert requests.get(url + "/health", timeout=10).status_code == 200
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)
