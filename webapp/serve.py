"""Run the web server: `python -m webapp.serve --host 127.0.0.1 --port 8000 --workers N`.

One worker is plain `uvicorn webapp.asgi:application`. For several, uvicorn's `--workers` binds one
listening socket in the parent and every worker accepts from it: the worker whose event loop wakes
first takes every connection that is waiting, so a few keep-alive clients (a webhook sender, a
proxy's upstream pool) can all land on one process while the others idle. Measured with the intake
benchmark (8 keep-alive connections, 2 workers): one worker served all of them in 3 of 4 runs (~400
tickets/s, one core busy), against ~600-680/s when they were shared (docs/benchmarks.md § intake).

Here each worker binds its own listener with SO_REUSEPORT and the kernel spreads new connections
over them by a hash of the addresses (Linux). The parent only watches: it restarts a worker that
dies, stops them all on SIGINT/SIGTERM, and gives up when a worker cannot start at all.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from multiprocessing.process import BaseProcess

import uvicorn
from uvicorn.config import STARTUP_FAILURE

APP = "webapp.asgi:application"
STOP_GRACE_S = 30.0


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port) that shares the port with the other workers' sockets.

    The protocol is given explicitly: asyncio sets TCP_NODELAY only on accepted sockets whose `proto`
    says TCP, and a socket made with proto 0 (as uvicorn's own `bind_socket`) leaves Nagle on.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def port_is_free(host: str, port: int) -> bool:
    """Whether nothing listens on (host, port) yet. SO_REUSEPORT would otherwise let a second
    instance join a running one's port and quietly take half of its connections."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _exit_with_parent(parent: int) -> None:
    # A worker must not outlive its supervisor (killed with SIGKILL, say) and keep the port.
    while os.getppid() == parent:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)


def _worker(host: str, port: int, uvicorn_options: dict) -> None:
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    try:
        sock = reuse_port_socket(host, port)
    except OSError as exc:
        print(f"cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        sys.exit(STARTUP_FAILURE)
    uvicorn.Server(uvicorn.Config(APP, **uvicorn_options)).run(sockets=[sock])


def supervise(host: str, port: int, workers: int, uvicorn_options: dict) -> int:
    """Run `workers` server processes until SIGINT/SIGTERM; the exit status."""
    if not port_is_free(host, port):
        print(f"cannot listen on {host}:{port}: address already in use", file=sys.stderr)
        return 1
    spawn = multiprocessing.get_context("spawn")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    def start() -> BaseProcess:
        process = spawn.Process(target=_worker, args=(host, port, uvicorn_options), name="moedesk-web")
        process.start()
        return process

    processes = [start() for _ in range(workers)]
    status = 0
    while not stop.wait(0.5):
        for i, process in enumerate(processes):
            if process.is_alive():
                continue
            if process.exitcode == STARTUP_FAILURE:
                print(f"web worker {process.pid} could not start; stopping", file=sys.stderr)
                status = 1
                stop.set()
                break
            print(f"web worker {process.pid} exited with {process.exitcode}; starting another", file=sys.stderr)
            processes[i] = start()
    for process in processes:
        if process.is_alive():
            process.terminate()  # SIGTERM: uvicorn finishes the requests in flight
    deadline = time.monotonic() + STOP_GRACE_S
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()
    return status


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--workers", type=int, default=1, help="server processes (each its own listener when > 1)")
    ap.add_argument("--log-level", default="info")
    ap.add_argument("--no-access-log", action="store_true")
    args = ap.parse_args(argv)
    if args.workers < 1:
        ap.error("--workers must be at least 1")
    options = {"log_level": args.log_level, "access_log": not args.no_access_log}
    if args.workers == 1:
        uvicorn.run(APP, host=args.host, port=args.port, **options)
        return 0
    return supervise(args.host, args.port, args.workers, options)


if __name__ == "__main__":
    sys.exit(main())
