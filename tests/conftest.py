"""Shared fixtures: the offline dataset mirror and a loopback HTTP server with fault injection."""

from __future__ import annotations

import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

# The mirror sits beside the repository: <parent>/main (this repo) and <parent>/shared/datasets.
MIRROR = Path(__file__).resolve().parents[2] / "shared" / "datasets"

FAULTS = ("404", "500", "corrupt", "truncate", "stall")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Engine tests (marked e2e) first, each file in its own order: under `make test`'s workers
    the minutes-long files start at once and the quick unit tests fill the gaps at the end."""
    items.sort(key=lambda item: item.get_closest_marker("e2e") is None)


@pytest.fixture(scope="session")
def mirror() -> Path:
    """The read-only offline copy of the real datasets; skips the test when it is absent."""
    if not MIRROR.is_dir():
        pytest.skip(f"dataset mirror {MIRROR} not found")
    return MIRROR


class _FaultyHandler(SimpleHTTPRequestHandler):
    """Serves files from a folder, but first plays any faults queued for the request path."""

    server: LoopbackServer

    def log_message(self, format: str, *args: object) -> None:
        """Keep the test output quiet."""

    def do_GET(self) -> None:
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        with self.server.lock:
            self.server.requests.append(path)
            queue = self.server.faults.get(path)
            fault = queue.pop(0) if queue else None
        if fault == "stall":
            time.sleep(self.server.stall_s)  # longer than the client's timeout: it gives up
            self.close_connection = True
        elif fault in ("404", "500"):
            self.send_error(int(fault))
        elif fault in ("corrupt", "truncate"):
            self._send_damaged(Path(self.translate_path(self.path)), fault)
        else:
            super().do_GET()

    def _send_damaged(self, file: Path, fault: str) -> None:
        """Send the file with one byte flipped, or only its first half under a full length."""
        data = bytearray(file.read_bytes())
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if fault == "corrupt":
            data[len(data) // 2] ^= 0xFF
            self.wfile.write(bytes(data))
        else:
            self.wfile.write(bytes(data[: len(data) // 2]))
            self.wfile.flush()
        self.close_connection = True


class LoopbackServer(ThreadingHTTPServer):
    """An HTTP server on 127.0.0.1 serving `root`, with per-path fault queues.

    `inject("/isbi2012/train/images/00.png", "500")` makes the next request for that path
    answer 500; later requests are served normally once the queue is empty. A "stall"
    answers nothing for `stall_s` seconds and then closes the connection. `requests`
    lists every requested path in order.
    """

    daemon_threads = True

    def __init__(self, root: Path) -> None:
        super().__init__(("127.0.0.1", 0), partial(_FaultyHandler, directory=str(root)))
        self.root = root
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.faults: dict[str, list[str]] = {}
        self.requests: list[str] = []
        self.stall_s = 5.0
        self.lock = threading.Lock()

    def inject(self, path: str, *faults: str) -> None:
        """Queue faults (404, 500, corrupt, truncate, stall) for the next requests of `path`."""
        unknown = set(faults) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}; expected some of {FAULTS}")
        with self.lock:
            self.faults.setdefault(path, []).extend(faults)

    def count(self, path: str) -> int:
        """How many times `path` was requested."""
        with self.lock:
            return self.requests.count(path)


@pytest.fixture
def http_server() -> Iterator[Callable[[Path], LoopbackServer]]:
    """A factory: `http_server(folder)` starts a LoopbackServer serving it, stopped afterwards."""
    started: list[tuple[LoopbackServer, threading.Thread]] = []

    def start(root: Path) -> LoopbackServer:
        server = LoopbackServer(Path(root))
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        thread.start()
        started.append((server, thread))
        return server

    yield start
    for server, thread in started:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
