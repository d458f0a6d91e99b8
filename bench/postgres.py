"""The baseline: a real PostgreSQL 15 holding the same versions in the original CAVE's layout.

The original materializes each version into its own database (``{datastack}__mat{N}``). Each
table with bound points is split in two (``DynamicAnnotationDB`` / ``EMAnnotationSchemas``):

- the annotation table ``{table}``: ``id`` (primary key), the CRUD columns, the points and the
  other fields;
- the segmentation table ``{table}__{pcg_table}``: ``id`` (primary key, the annotation's id),
  ``*_supervoxel_id`` and ``*_root_id``, with a B-tree index on every root-id column.

Reference tables have a B-tree index on ``target_id``. Queries join the two tables on ``id``
(the current default, ``merge_tables=False``) with the filters as ``IN`` / ``=`` lists on the
segmentation table and ``valid = true`` on the annotation table.

Differences, all in the baseline's favour: positions are three ``bigint`` columns instead of
PostGIS ``POINTZ`` geometries (no PostGIS here; ``ST_X``/``ST_Y``/``ST_Z`` would cost more),
rows are timed as psql receives them (server + libpq, no pandas/Arrow conversion like the
original's Flask app), JIT is off (it only adds compile time to these queries), and the whole
working set fits in RAM after a warm-up run.

The cluster lives in a throwaway directory, listens on a free loopback port only, and is
stopped and removed at the end. Rows go in with ``COPY … FROM STDIN (FORMAT csv)`` through
psql, in ``id`` order — the original's heap order (ids are assigned as annotations arrive, not
by neuron), so one neuron's synapses are scattered over the heap as in CAVE.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv

BIN = Path(os.environ.get("OPENCAVE_BENCH_PG_BIN", "/usr/lib/postgresql/15/bin"))
PSQL = shutil.which("psql", path=str(BIN)) or shutil.which("psql") or "psql"

#: Settings of the baseline server: sized for this machine class (2 cores, 24 GiB) and tuned
#: for bulk load (durability off: it is a throwaway cluster; query plans are unaffected).
SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "unix_socket_directories": "''",
    "max_connections": "64",
    "shared_buffers": "4GB",
    "effective_cache_size": "12GB",
    "work_mem": "64MB",
    "maintenance_work_mem": "1GB",
    "max_parallel_workers_per_gather": "2",
    "max_parallel_maintenance_workers": "2",
    "random_page_cost": "1.1",
    "effective_io_concurrency": "200",
    "jit": "off",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    # Checkpoints recycle the WAL: with 20GB it grew to 16 GB beside a 23 GB table at 10^8.
    "max_wal_size": "2GB",
    "checkpoint_timeout": "1h",
    "autovacuum": "off",
    "logging_collector": "off",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def available() -> bool:
    return (BIN / "postgres").exists() and (BIN / "initdb").exists()


class PostgresError(RuntimeError):
    pass


class Postgres:
    """A PostgreSQL server on a throwaway data directory (or a kept one, to reuse a load)."""

    def __init__(self, directory: Path, *, keep: bool = False) -> None:
        self.directory = Path(directory)
        self.data = self.directory / "pgdata"
        self.keep = keep
        self.port = free_port()
        self._as_user: list[str] = []
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            user = pwd.getpwnam("postgres")
            self._as_user = ["runuser", "-u", "postgres", "--"]
            self._uid, self._gid = user.pw_uid, user.pw_gid

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> Postgres:
        fresh = not (self.data / "PG_VERSION").exists()
        if fresh:
            if self.data.exists():
                shutil.rmtree(self.data)
            self.directory.mkdir(parents=True, exist_ok=True)
            self.data.mkdir()
            self._own(self.directory)
            self._own(self.data)
            self._run([str(BIN / "initdb"), "-D", str(self.data), "-U", "postgres",
                       "--auth=trust", "--encoding=UTF8", "--locale=C"])
        options = " ".join(f"-c {k}={v}" for k, v in SETTINGS.items())
        log = self.directory / "postgres.log"
        if not log.exists():
            log.touch()
            self._own(log)
        self._run([str(BIN / "pg_ctl"), "-D", str(self.data), "-l", str(log), "-w", "-t", "120",
                   "-o", f"-p {self.port} {options}", "start"])
        return self

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run([str(BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"],
                      check=False)
        if not self.keep:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Postgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def postmaster_pids(self) -> list[int]:
        """The postmaster and its children (backends), for memory accounting."""
        try:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return []
        out = [pid]
        for child in Path("/proc").glob("[0-9]*"):
            try:
                fields = (child / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(child.name))
        return out

    # -- SQL --------------------------------------------------------------------------------
    def _psql_args(self, database: str) -> list[str]:
        return [PSQL, "-X", "-q", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                "-d", database, "-v", "ON_ERROR_STOP=1"]

    def sql(self, statement: str, database: str = "postgres") -> str:
        """Run statements; return their unaligned, tuples-only output."""
        done = subprocess.run([*self._psql_args(database), "-At", "-c", statement],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise PostgresError(f"psql failed: {done.stderr.strip()}\n{statement[:500]}")
        return done.stdout

    def create_database(self, name: str) -> None:
        self.sql(f'DROP DATABASE IF EXISTS "{name}"')
        self.sql(f'CREATE DATABASE "{name}"')

    def has_database(self, name: str) -> bool:
        return self.sql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'").strip() == "1"

    def copy_in(self, database: str, table: str, columns: Sequence[str]) -> CopyIn:
        return CopyIn(self, database, table, columns)

    def session(self, database: str, *, fetch_count: int | None = None) -> Psql:
        return Psql(self._psql_args(database), fetch_count=fetch_count)

    # -- helpers ----------------------------------------------------------------------------
    def _own(self, path: Path) -> None:
        if self._as_user:
            os.chown(path, self._uid, self._gid)

    def _run(self, args: list[str], *, check: bool = True) -> None:
        done = subprocess.run([*self._as_user, *args], capture_output=True, text=True)
        if check and done.returncode != 0:
            log = self.directory / "postgres.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise PostgresError(f"{' '.join(args[:2])} failed: {done.stderr.strip()}\n{tail}")


class CopyIn:
    """``COPY table (columns) FROM STDIN (FORMAT csv)`` fed with Arrow record batches."""

    def __init__(self, pg: Postgres, database: str, table: str, columns: Sequence[str]) -> None:
        cols = ", ".join(f'"{c}"' for c in columns)
        self.columns = list(columns)
        self._proc = subprocess.Popen(
            [*pg._psql_args(database), "-c", f'COPY "{table}" ({cols}) FROM STDIN (FORMAT csv)'],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        assert self._proc.stdin is not None
        self._writer: pacsv.CSVWriter | None = None
        self.rows = 0

    def write(self, batch: pa.RecordBatch) -> None:
        batch = batch.select(self.columns)
        if self._writer is None:
            self._writer = pacsv.CSVWriter(self._proc.stdin, batch.schema,
                                           write_options=pacsv.WriteOptions(include_header=False))
        self._writer.write_batch(batch)
        self.rows += batch.num_rows

    def close(self) -> int:
        if self._writer is not None:
            self._writer.close()
        assert self._proc.stdin is not None
        self._proc.stdin.close()
        err = self._proc.stderr.read().decode() if self._proc.stderr else ""
        if self._proc.wait() != 0:
            raise PostgresError(f"COPY failed: {err.strip()}")
        return self.rows


_TIME = re.compile(r"^Time: ([0-9.]+) ms")
_MARK = "__bench_done__"


@dataclass
class Timed:
    seconds: float
    rows: int | None = None


class Psql:
    """One persistent psql session: send a statement, get the time psql measured for it (from
    sending the query to holding the whole result, before printing it) and, optionally, the
    row count. Output rows go to /dev/null, unaligned, so printing costs little."""

    def __init__(self, args: list[str], *, fetch_count: int | None = None) -> None:
        self._proc = subprocess.Popen(
            [*args[:-2], "-v", "ON_ERROR_STOP=0"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, bufsize=1,
        )
        self._errors: list[str] = []
        self._stderr = threading.Thread(target=self._drain_stderr, daemon=True)
        self._stderr.start()
        self._send("\\pset pager off\n\\pset format unaligned\n\\pset tuples_only on\n"
                   "\\timing on\n\\o /dev/null\n")
        if fetch_count:  # fetch through a cursor in batches: bounded client memory
            self._send(f"\\set FETCH_COUNT {int(fetch_count)}\n")
        self._wait()

    @property
    def pid(self) -> int:
        return self._proc.pid

    def kill(self) -> None:
        self._proc.kill()

    def _drain_stderr(self) -> None:
        assert self._proc.stderr is not None
        for line in self._proc.stderr:
            self._errors.append(line.rstrip())

    def _send(self, text: str) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.write(text)
        self._proc.stdin.flush()

    def _wait(self) -> list[str]:
        self._send(f"\\echo {_MARK}\n")
        lines = []
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            if line.rstrip() == _MARK:
                return lines
            lines.append(line.rstrip())
        raise PostgresError(f"psql exited: {' '.join(self._errors[-5:])}")

    def time(self, statement: str) -> float:
        """Seconds psql measured for one statement (raises on an SQL error)."""
        n_errors = len(self._errors)
        self._send(statement.rstrip().rstrip(";") + ";\n")
        lines = self._wait()
        times = [float(m.group(1)) for m in map(_TIME.match, lines) if m]
        if not times:  # psql prints no time for a failed statement
            time.sleep(0.1)  # let the stderr reader catch up
            raise PostgresError("; ".join(self._errors[n_errors:])[:1000]
                                or f"no timing from psql for: {statement[:200]}")
        return times[-1] / 1000

    def scalar(self, statement: str) -> str:
        """The first value of a statement's result (printed to stdout for this one call)."""
        self._send("\\o\n")
        self._send(statement.rstrip().rstrip(";") + ";\n")
        lines = self._wait()
        self._send("\\o /dev/null\n")
        values = [line for line in lines if not _TIME.match(line)]
        return values[0] if values else ""

    def close(self) -> None:
        try:
            self._send("\\q\n")
            self._proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self._proc.kill()
