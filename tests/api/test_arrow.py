"""Arrow results: compressed for clients elsewhere, left uncompressed for this machine's own
(where compressing costs more than moving the bytes), read the same by caveclient."""

from __future__ import annotations

import httpx
import pyarrow as pa
import pytest

from opencave.api import create_app
from opencave.api.arrow import write_options
from opencave.instance import OpenCave
from opencave.settings import Settings
from tests.conftest import LiveServer

QUERY = "/materialize/api/v3/datastack/minnie65_public/version/1181/table/synapses_pni_2/query"


@pytest.mark.parametrize(("host", "setting", "expected"), [
    ("127.0.0.1", "auto", None), ("::1", "auto", None), ("10.1.2.3", "auto", "lz4"),
    ("testclient", "auto", "lz4"), (None, "auto", "lz4"), ("127.0.0.1", "zstd", "zstd"),
    ("10.1.2.3", "none", None),
])
def test_compression_follows_the_setting_and_where_the_client_is(host, setting, expected):
    assert write_options(host, setting).compression == expected


def _served(synth_dir, compression: str) -> tuple[pa.Table, int, object]:
    """Q2-like query as raw Arrow (table, body size) and through caveclient."""
    from caveclient import CAVEclient

    cave = OpenCave(Settings(data_dir=synth_dir, arrow_compression=compression))
    try:
        with LiveServer(create_app(cave)) as live:
            body = httpx.post(live.url + QUERY, json={}, timeout=60).content
            client = CAVEclient("minnie65_public", server_address=live.url)
            client.materialize.version = 1181
            frame = client.materialize.query_table("synapses_pni_2", limit=5000)
    finally:
        cave.close()
    return pa.ipc.open_stream(body).read_all(), len(body), frame


def test_every_compression_gives_the_same_rows(synth_dir):
    plain, plain_size, plain_frame = _served(synth_dir, "auto")
    packed, packed_size, packed_frame = _served(synth_dir, "lz4")
    assert packed.equals(plain) and plain.num_rows > 10_000
    assert packed_size < 0.8 * plain_size  # auto did not compress for this loopback client
    assert packed_frame.equals(plain_frame)


def test_a_kept_result_is_compressed_for_a_client_elsewhere(synth_dir, monkeypatch):
    from opencave.materialize import query

    monkeypatch.setattr(query, "LOOKUP_TABLE_ROWS", 0)  # small test tables are lookups
    cave = OpenCave(Settings(data_dir=synth_dir, arrow_compression="lz4"))
    try:
        with LiveServer(create_app(cave)) as live:
            answers = [httpx.post(live.url + QUERY, json={}, timeout=60) for _ in range(2)]
    finally:
        cave.close()
    assert [a.headers["X-Result-Cache"] for a in answers] == ["miss", "hit"]
    tables = [pa.ipc.open_stream(a.content).read_all() for a in answers]
    assert tables[1].equals(tables[0]) and tables[0].num_rows > 10_000
    assert len(answers[1].content) == len(answers[0].content)  # compressed both times
