"""A real S3 server on loopback for the DVC remote tests: moto's server behind a TCP relay that
can be stopped mid-transfer (connections reset, new ones refused) and started again on the
same port, as a remote that goes down and comes back would."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable

import boto3
from moto.server import ThreadedMotoServer

# moto accepts any credentials; DVC's S3 plugin reads them from the environment.
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "unetflow-test",
    "AWS_SECRET_ACCESS_KEY": "unetflow-test",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Relay:
    """Forwards 127.0.0.1:`port` to `target`; `stop()` drops every connection and the listener,
    `on_request(n)` is called with the count of client requests that started with `method`."""

    def __init__(self, port: int, target: int, method: bytes = b"PUT ") -> None:
        self.port, self.target, self.method = port, target, method
        self.requests = 0
        self.on_request: Callable[[int], None] = lambda n: None
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None

    def start(self) -> None:
        if self._listener is not None:
            return
        listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop_after(self, n: int) -> None:
        """Stop at the `n`-th client request from now on (counting starts again at 0)."""
        with self._lock:
            self.requests = 0
        self.on_request = lambda count: count == n and self.stop()

    def stop(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, []
            listener, self._listener = self._listener, None
        for sock in [*sockets, *([listener] if listener else [])]:
            _drop(sock)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self._sockets += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, counted: bool) -> None:
        try:
            while data := src.recv(65536):
                if counted and data.startswith(self.method):
                    with self._lock:
                        self.requests += 1
                        n = self.requests
                    self.on_request(n)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            _drop(src)
            _drop(dst)


def _drop(sock: socket.socket) -> None:
    """End both directions of `sock` now (a no-op on a socket that is already down)."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class S3Loopback:
    """moto's S3 server with one bucket, reached through a stoppable `Relay` at `url`."""

    def __init__(self, bucket: str = "unetflow-remote") -> None:
        self.bucket = bucket
        self._moto_port = free_port()
        self._server = ThreadedMotoServer(
            ip_address="127.0.0.1", port=self._moto_port, verbose=False
        )
        self.relay = Relay(free_port(), self._moto_port)
        self.url = f"http://127.0.0.1:{self.relay.port}"

    def __enter__(self) -> S3Loopback:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
        self._server.start()
        self.relay.start()
        self.client().create_bucket(Bucket=self.bucket)
        return self

    def __exit__(self, *exc: object) -> None:
        self.relay.stop()
        self._server.stop()

    def client(self):  # noqa: ANN201 - boto3's client type is generated at run time
        """A boto3 S3 client that talks to moto directly (not through the relay)."""
        return boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{self._moto_port}",
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
        )

    def objects(self, prefix: str) -> set[str]:
        """The keys under `prefix`/ in the bucket, without the prefix."""
        pages = (
            self.client()
            .get_paginator("list_objects_v2")
            .paginate(Bucket=self.bucket, Prefix=f"{prefix}/")
        )
        return {obj["Key"][len(prefix) + 1 :] for page in pages for obj in page.get("Contents", [])}
