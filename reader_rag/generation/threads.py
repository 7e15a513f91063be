"""Run a blocking ``GenerationStream`` in a worker thread and read it from asyncio."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable

from reader_rag.generation.results import GenerationResult, GenerationStream

logger = logging.getLogger(__name__)

_PIECE = "piece"
_DONE = "done"
_ERROR = "error"


async def iterate_in_thread(
    open_stream: Callable[[], GenerationStream],
) -> AsyncIterator[tuple[str, GenerationResult | None]]:
    """Yield ``(piece, result)`` pairs of a stream that one worker thread opens and reads.

    ``result`` is ``None`` until the stream has set it. After the last piece, one more pair
    ``("", result)`` follows if the result was set only when the stream ended.

    The whole stream runs in one thread because the decoding loop keeps the thread-local
    ``torch.inference_mode()`` active across its yields. Resuming it from executor threads in
    turn, as LangChain's default ``_astream`` does, would run forward passes outside inference
    mode. Closing this iterator early stops the worker after its next piece.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, object, GenerationResult | None]] = asyncio.Queue()
    cancelled = threading.Event()

    def send(kind: str, value: object, result: GenerationResult | None) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, (kind, value, result))
        except RuntimeError:
            # The event loop is closed, so no task reads the queue any more.
            logger.debug("event loop closed; stopping the stream worker")
            cancelled.set()

    def produce() -> None:
        try:
            stream = open_stream()
            try:
                for piece in stream:
                    if cancelled.is_set():
                        break
                    send(_PIECE, piece, stream.result)
            finally:
                stream.close()
            send(_DONE, None, stream.result)
        except BaseException as error:  # re-raised in the reading task
            send(_ERROR, error, None)

    worker = threading.Thread(target=produce, name="reader-rag-stream", daemon=True)
    worker.start()
    final_seen = False
    try:
        while True:
            kind, value, result = await queue.get()
            if kind == _ERROR:
                raise value  # type: ignore[misc]
            if kind == _DONE:
                if not final_seen:
                    yield "", result
                return
            final_seen = result is not None
            yield value, result  # type: ignore[misc]
    finally:
        cancelled.set()
