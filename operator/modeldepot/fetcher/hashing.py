"""The running hashes of one file, computed in order behind its writers.

The thread that receives a body only receives and writes; `OrderedHasher` hashes behind it on a
thread of its own (hashlib releases the GIL, so sha256 runs on another core meanwhile). Work is
taken strictly in file order from a bounded queue (`depth` jobs, so memory stays bounded), of two
kinds: bytes just written, handed over in memory (`put`), or a range read back from the file
(`put_disk`: the prefix already on disk when a download resumes, or what several streams wrote at
their offsets). `wait()` returns once everything queued is hashed; the `FileState` then says how
many bytes were hashed and whether they are the file, and an error of the hashing thread (a read
failing, a file shorter than what was written) is raised there. `InlineHasher` is the same
interface without the thread, for files of one batch. With `sync_every`, the hashing thread also
starts the write-back of what it hashed (`sync_file_range`, asynchronous), so that the final fsync
of a large file finds little left to write.
"""

from __future__ import annotations

import os
import queue
import threading
from typing import Any

from modeldepot import errors
from modeldepot.fetcher.verify import FileState

_STOP = object()
_SYNC_FILE_RANGE_WRITE = 2
_sync_fn: Any = None
_sync_loaded = False


def start_writeback(fd: int, start: int, end: int) -> None:
    """Ask the kernel to start writing `[start, end)` of `fd` to disk, without waiting for it.

    libc's `sync_file_range` (Linux) through ctypes, loaded on first use; where it is missing this
    does nothing (it only moves work earlier; the fsync after verification is what makes it durable).
    """
    global _sync_fn, _sync_loaded
    if not _sync_loaded:
        _sync_loaded = True
        try:
            import ctypes

            fn = ctypes.CDLL(None, use_errno=True).sync_file_range
            fn.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
            _sync_fn = fn
        except (ImportError, OSError, AttributeError):
            _sync_fn = None
    if _sync_fn is not None and end > start:
        _sync_fn(fd, start, end - start, _SYNC_FILE_RANGE_WRITE)


class InlineHasher:
    """Hashes one file's bytes in order, in the calling thread."""

    def __init__(self, state: FileState, fd: int, *, read_size: int = 1 << 20) -> None:
        self.state = state
        self._fd = fd
        self._read_size = read_size
        self._queued = state.offset
        self._buf: bytearray | None = None

    @property
    def queued(self) -> int:
        """Where the bytes handed over so far end."""
        return self._queued

    def put(self, pieces: list[bytes]) -> None:
        """Hash these bytes, which follow everything handed over so far."""
        self._queued += sum(len(p) for p in pieces)
        self._hash_pieces(pieces)

    def put_disk(self, end: int, *, block: bool = True) -> None:
        """Hash the file's bytes from where the handed-over bytes end up to `end`, read from the file.

        `block=False`: skip it if the hasher is behind (a later call with a larger `end` covers it).
        """
        if end > self._queued:
            self._queued = end
            self._hash_disk(end)

    def wait(self) -> int:
        """Wait until everything handed over is hashed; the bytes hashed."""
        return self.state.offset

    def reset(self) -> None:
        """Forget everything hashed: the file starts over from byte 0."""
        self.wait()
        self.state.reset()
        self._queued = 0

    def close(self) -> None:
        pass

    def __enter__(self) -> InlineHasher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _hash_pieces(self, pieces: list[bytes]) -> None:
        for piece in pieces:
            self.state.hashers.update(piece)
            self.state.offset += len(piece)

    def _hash_disk(self, end: int) -> None:
        if self._buf is None:
            self._buf = bytearray(self._read_size)
        view = memoryview(self._buf)
        state = self.state
        while state.offset < end:
            got = os.preadv(self._fd, [view[: min(self._read_size, end - state.offset)]], state.offset)
            if got <= 0:
                raise errors.DownloadFailedError(
                    f"{state.item.path}: the file ends at byte {state.offset} although {end} were"
                    " written; it was changed by someone else"
                )
            state.hashers.update(view[:got])
            state.offset += got


class OrderedHasher(InlineHasher):
    """Hashes one file's bytes in order on a thread of its own (see the module docstring)."""

    def __init__(
        self, state: FileState, fd: int, *, read_size: int = 1 << 20, depth: int = 4, sync_every: int = 0
    ) -> None:
        super().__init__(state, fd, read_size=read_size)
        self._sync_every = sync_every
        self._synced = state.offset
        self._error: BaseException | None = None
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, depth))
        self._thread = threading.Thread(target=self._run, name="hash", daemon=True)
        self._thread.start()

    def put(self, pieces: list[bytes]) -> None:
        """Queue these bytes (blocks while the queue is full)."""
        self._raise_error()
        self._queued += sum(len(p) for p in pieces)
        self._queue.put(pieces)

    def put_disk(self, end: int, *, block: bool = True) -> None:
        self._raise_error()
        if end > self._queued:
            try:
                self._queue.put(end, block=block)
            except queue.Full:
                return
            self._queued = end

    def wait(self) -> int:
        """Wait until everything queued is hashed (raises the hashing thread's error)."""
        self._queue.join()
        self._raise_error()
        return self.state.offset

    def reset(self) -> None:
        super().reset()
        self._synced = 0

    def close(self) -> None:
        """Stop the thread once what is queued is done; idempotent."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            try:
                if job is _STOP:
                    return
                if self._error is not None:
                    continue  # keep draining, so that no writer blocks on a dead hasher
                if isinstance(job, int):
                    self._hash_disk(job)
                else:
                    self._hash_pieces(job)
                if self._sync_every and self.state.offset - self._synced >= self._sync_every:
                    start_writeback(self._fd, self._synced, self.state.offset)
                    self._synced = self.state.offset
            except BaseException as exc:  # raised in the writer's thread
                self._error = exc
            finally:
                self._queue.task_done()
