"""The data directory: what no one needs any more, and the lock that says when removing it
is safe."""

import fcntl
import threading

import pytest

from opencave.errors import Conflict
from opencave.storage.files import DataDir, disk_bytes


def test_garbage_is_unkept_stored_files_and_temporaries_of_killed_writers(tmp_path):
    data = DataDir(tmp_path)
    tables = tmp_path / "tables" / "volume" / "table"
    tables.mkdir(parents=True)
    kept = [tables / "bulk-1.parquet", tables / "bulk-1.parquet.duckdb"]
    replaced = [tables / "delta-2.parquet", tables / "delta-2.parquet.duckdb",
                tmp_path / "versions" / "ds" / "7" / "mask-3.parquet"]
    spill = tables / "delta-4.parquet.duckdb.tmp-0a1b2c3d.tmp"  # DuckDB's, beside its file
    spill.mkdir()
    (spill / "sort-run.bin").write_bytes(b"x" * 10)
    half_written = tables / "delta-4.parquet.tmp-0a1b2c3d"
    graph = tmp_path / "segmentation" / "graph"
    killed_build = graph / ".build"  # a graph build's work files, left by a killed one
    for path in [*kept, *replaced, half_written, graph / "parent.npy", killed_build / "x.npy"]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 100)
    (tmp_path / "live.sqlite").write_bytes(b"x")  # outside tables/ and versions/: never
    garbage = data.garbage(set(kept))
    assert sorted(garbage) == sorted([*replaced, spill, half_written, killed_build])
    assert sum(disk_bytes(path) for path in garbage) == 5 * 100 + 10
    DataDir.remove(garbage)
    assert all(path.exists() for path in kept) and (tmp_path / "live.sqlite").exists()
    assert (graph / "parent.npy").exists()
    assert data.garbage(set(kept)) == []


def test_a_task_alone_in_the_directory_is_refused_while_another_user_holds_it(tmp_path):
    server, gc = DataDir(tmp_path).lock(), DataDir(tmp_path).lock()
    with pytest.raises(Conflict, match=r"another opencave process .* is using"), \
            gc.alone("remove files no version uses"):
        pass
    server.release()
    with gc.alone("remove files no version uses"):
        pass
    gc.release()


def test_a_process_starting_while_a_task_is_alone_waits_for_it(tmp_path):
    gc = DataDir(tmp_path).lock()
    started = threading.Event()

    def start_a_server() -> None:
        DataDir(tmp_path).lock().release()
        started.set()

    with gc.alone("remove files no version uses"):
        thread = threading.Thread(target=start_a_server)
        thread.start()
        assert not started.wait(0.3)
    assert started.wait(10)  # the lock is shared again after the block
    thread.join()
    gc.release()


def test_without_file_locks_the_directory_opens_but_no_task_can_be_alone(tmp_path,
                                                                         monkeypatch):
    def no_locks(file, operation):  # type: ignore[no-untyped-def]
        raise OSError(37, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    lock = DataDir(tmp_path).lock()  # a server still starts
    with pytest.raises(Conflict, match="cannot be locked"), lock.alone("remove files"):
        pass
    lock.release()
