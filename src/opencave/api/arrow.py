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
    batches = rows if isinstance(rows, ResultStream) else rows.to_batches()
    return stream_response(result, ipc_stream(rows.schema, batches), CONTENT_TYPE)


def stream_response(result: QueryResult, body: Iterator[bytes],
                    media_type: str) -> StreamingResponse:
    """``body`` streamed with the result's headers and warnings; the query's stream is
    closed when the response ends, even when the client went away before reading it."""
    rows = result.stream
    task = BackgroundTask(rows.close) if isinstance(rows, ResultStream) else None
    response = StreamingResponse(body, media_type=media_type, headers=result.headers,
                                 background=task)
    response.headers["content-type"] = media_type
    for warning in result.warnings:
        response.headers.append("Warning", warning)
    return response
