"""`python -m webapp.serve`: several web workers, each with its own listener, share the connections."""

import asyncio
import signal
import socket
import sys
import time

import psutil
import pytest

from tests.console.live import Process, _free_port, service_env

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _serve(port: int, workers: int) -> Process:
    return Process([sys.executable, "-m", "webapp.serve", "--port", str(port), "--workers", str(workers),
                    "--log-level", "warning", "--no-access-log"], service_env(), "serve")


def _workers(server: Process, n: int, timeout: float = 60) -> list[psutil.Process]:
    """The server's worker processes once `n` of them listen on the port."""
    parent = psutil.Process(server.proc.pid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.proc.poll() is None, server.output()
        listening = [c for c in parent.children() if _listens(c)]
        if len(listening) == n:
            return listening
        time.sleep(0.2)
    raise AssertionError(f"{n} workers did not start listening:\n{server.output()}")


def _listens(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE and any(
            c.status == psutil.CONN_LISTEN for c in process.net_connections())
    except psutil.Error:  # gone meanwhile
        return False


def _get(sock: socket.socket) -> bytes:
    sock.sendall(b"GET /accounts/login/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    return sock.recv(65536)


async def _connections_per_worker(port: int, workers: list[psutil.Process], n: int) -> list[int]:
    """Open `n` keep-alive connections at once (as a sender's connection pool does), one request
    each; how many of them each worker holds."""

    async def one() -> asyncio.StreamWriter:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /accounts/login/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert (await reader.readuntil(b"\r\n")).startswith(b"HTTP/1.1 200")
        return writer

    writers = await asyncio.gather(*(one() for _ in range(n)))
    held = [sum(c.status == psutil.CONN_ESTABLISHED for c in w.net_connections()) for w in workers]
    for w in writers:
        w.close()
        await w.wait_closed()
    return held


def test_keep_alive_connections_are_spread_over_the_workers():
    port = _free_port()
    server = _serve(port, 2)
    try:
        held = asyncio.run(_connections_per_worker(port, _workers(server, 2), 16))
        assert sum(held) == 16
        # uvicorn's --workers (one shared listener) put all 16 on one worker in 1 of 3 tries here, and
        # under load all 8 of the intake benchmark's in 3 of 4 runs; spread by the kernel's hash,
        # all 16 on one worker has p = 2**-15
        assert min(held) >= 1, held
    finally:
        server.stop()


def test_a_dead_worker_is_replaced_and_sigterm_stops_all():
    port = _free_port()
    server = _serve(port, 2)
    try:
        first = _workers(server, 2)
        first[0].kill()
        first[0].wait(timeout=10)  # reaped by the supervisor
        replaced = {w.pid for w in _workers(server, 2)}
        assert first[0].pid not in replaced and first[1].pid in replaced
        with socket.create_connection(("127.0.0.1", port)) as c:
            assert _get(c).startswith(b"HTTP/1.1 200")
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=40) == 0
        assert not [p for p in psutil.pids() if p in replaced and psutil.pid_exists(p)]
    finally:
        server.stop()


def test_a_port_in_use_is_refused_not_shared():
    port = _free_port()
    server = _serve(port, 2)
    try:
        _workers(server, 2)
        second = _serve(port, 2)
        try:
            assert second.proc.wait(timeout=30) == 1
            assert "address already in use" in second.output()
        finally:
            second.stop()
    finally:
        server.stop()
