"""Arrow responses exactly as caveclient reads them: an IPC *stream* with the content type
``data.arrow`` (compared for equality by the client), streamed batch by batch."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import pyarrow as pa
from starlette.background import BackgroundTask
from starlette.responses import StreamingResponse

from ..materialize.engine import ResultStream
from ..materialize.service import QueryResult

CONTENT_TYPE = "data.arrow"
_OPTIONS = pa.ipc.IpcWriteOptions(compression="lz4")


class _Buffer:
    """A write-only file object whose contents are drained after each batch."""

    closed = False

    def __init__(self) -> None:
        self._chunks: list[bytes] = []

    def write(self, data: bytes | memoryview) -> int:
        self._chunks.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def drain(self) -> bytes:
        data = b"".join(self._chunks)
        self._chunks.clear()
        return data


def ipc_stream(schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> Iterator[bytes]:
    buffer = _Buffer()
    writer = pa.ipc.new_stream(pa.PythonFile(buffer, mode="w"), schema, options=_OPTIONS)
    yield buffer.drain()
    for batch in batches:
        if batch.num_rows:
            writer.write_batch(batch)
            yield buffer.drain()
    writer.close()
    yield buffer.drain()


def arrow_response(result: QueryResult) -> StreamingResponse:
    rows = result.stream
    if isinstance(rows, ResultStream):
        body = ipc_stream(rows.schema, rows)
        task = BackgroundTask(rows.close)
    else:
        body = ipc_stream(rows.schema, rows.to_batches())
        task = None
    response = StreamingResponse(body, media_type=CONTENT_TYPE, headers=result.headers,
                                 background=task)
    response.headers["content-type"] = CONTENT_TYPE
    for warning in result.warnings:
        response.headers.append("Warning", warning)
    return response
