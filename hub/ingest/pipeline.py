"""Bounded queue → decoder thread → writer thread → acknowledgements after commit.

Drivers put raw MQTT messages (or already-decoded Modbus batches) into a bounded queue. When
the queue is full, `put_mqtt` blocks the MQTT network thread, which stops reading the socket:
the broker then holds the messages (our broker config lets it), so nothing is dropped. A
message is acknowledged to the broker only after the transaction holding its rows commits.

Decoding and writing are two threads with one batch handed between them: while the writer
waits for PostgreSQL (COPY, commit; the GIL is released), the decoder builds the next batch.
Batches are written in the order they were decoded, so one device's rows stay in order.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg

from hub.errors import StoreError
from hub.ingest.catalog import DeviceCatalog
from hub.ingest.decode import Batch, Limits, decode_message
from hub.ingest.writer import BatchWriter, TransactionSink, WriteResult
from hub.store.db import connect

log = logging.getLogger(__name__)

Acker = Callable[[list[Any]], None]


@dataclass(frozen=True, slots=True)
class Incoming:
    """A raw message as the MQTT driver received it; `token` is handed back to `acker`."""

    topic: str
    payload: bytes
    received: float
    token: Any = None
    redelivered: bool = False  # MQTT DUP: the hub may have committed it before a crash


@dataclass(frozen=True, slots=True)
class Prepared:
    """Rows a driver decoded itself (Modbus); `done` is called after they commit."""

    batch: Batch
    done: Callable[[], None] | None = None


@dataclass(frozen=True, slots=True)
class Committed:
    """Handed to listeners (rules, metrics) after a batch is durable."""

    batch: Batch
    result: WriteResult
    committed_at: datetime


Listener = Callable[[Committed], None]


@dataclass(frozen=True, slots=True)
class _Decoded:
    """A batch between the decoder and the writer; `since` is its oldest receive time."""

    batch: Batch
    tokens: list[Any]
    callbacks: list[Callable[[], None]]
    first_at: float
    since: float


@dataclass
class IngestStats:
    messages: int = 0
    readings: int = 0
    events: int = 0
    dead_letters: int = 0
    batches: int = 0
    dedup_batches: int = 0
    write_errors: int = 0
    last_batch_ms: float = 0.0
    oldest_wait_ms: float = 0.0
    queue_depth: int = 0
    batch_ms_total: float = 0.0  # sum of batch write times, for a Prometheus summary
    refused: int = 0  # put_mqtt while stopping: left unacknowledged, so the broker redelivers
    extra: dict[str, float] = field(default_factory=dict)


class IngestPipeline:
    """Owns the queue and the writer thread. Use as a context manager or start()/stop()."""

    def __init__(
        self,
        *,
        dsn: str,
        catalog: DeviceCatalog,
        limits: Limits | None = None,
        batch_rows: int = 20_000,
        batch_ms: int = 200,
        queue_size: int = 50_000,
        worker: str = "hub",
        acker: Acker | None = None,
        sinks: Sequence[TransactionSink] = (),
        listeners: Sequence[Listener] = (),
    ) -> None:
        self.dsn = dsn
        self.catalog = catalog
        self.limits = limits or Limits()
        self.batch_rows = batch_rows
        self.batch_s = batch_ms / 1000
        self.worker = worker
        self.acker = acker
        self.sinks = list(sinks)
        self.listeners = list(listeners)
        self.stats = IngestStats()
        self.dirty_since: datetime | None = None  # earliest reading time not yet rolled up
        # A deque rather than queue.Queue: append/popleft are atomic under the GIL and cost a
        # tenth of Queue's lock-and-condition dance, which matters at 20,000+ messages/s.
        self._queue: deque[Incoming | Prepared] = deque()
        self._queue_size = queue_size
        self._wakeup = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._decoder: threading.Thread | None = None
        self._dirty_lock = threading.Lock()
        # Decoded batches waiting for the writer (at most one: a bound, not a buffer); None
        # tells the writer the decoder has finished.
        self._handoff: deque[_Decoded | None] = deque()
        self._handoff_ready = threading.Event()
        self._handoff_free = threading.Event()
        self._writer_gone = threading.Event()
        # Receive time of the oldest message taken off the queue but not yet handed to the
        # listeners (0: none), one mark per stage; the rule engine's clock must not pass them
        # (see oldest_waiting). A batch's mark is set in the next stage before it is cleared
        # in the previous one, so a message is never invisible.
        self._decoding_since = 0.0
        self._writing_since = 0.0

    # -- producers -----------------------------------------------------------------------
    def put_mqtt(self, topic: str, payload: bytes, token: Any = None, *, redelivered: bool = False) -> bool:
        """Queue one message, blocking while full; False if the pipeline is stopping."""
        q = self._queue
        while len(q) >= self._queue_size:  # backpressure: the MQTT thread stops reading
            if self._stopping.is_set():
                self.stats.refused += 1
                return False
            time.sleep(0.002)
        if self._stopping.is_set():
            self.stats.refused += 1
            return False
        q.append(Incoming(topic, payload, time.time(), token, redelivered))
        if not self._wakeup.is_set():
            self._wakeup.set()
        return True

    def put_prepared(self, batch: Batch, done: Callable[[], None] | None = None, *, timeout: float | None = None) -> bool:
        """Queue rows a driver decoded itself; waits up to `timeout` (None: forever) for room."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while len(self._queue) >= self._queue_size:
            if self._stopping.is_set() or (deadline is not None and time.monotonic() >= deadline):
                return False
            time.sleep(0.002)
        self._queue.append(Prepared(batch, done))
        self._wakeup.set()
        return True

    def add_listener(self, listener: Listener) -> None:
        self.listeners.append(listener)

    def add_sink(self, sink: TransactionSink) -> None:
        self.sinks.append(sink)

    def take_dirty_since(self) -> datetime | None:
        with self._dirty_lock:
            since, self.dirty_since = self.dirty_since, None
            return since

    def mark_dirty(self, since: datetime) -> None:
        """Readings from `since` on may not be rolled up yet."""
        with self._dirty_lock:
            if self.dirty_since is None or since < self.dirty_since:
                self.dirty_since = since

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        self._decoder = threading.Thread(target=self._decode_loop, name=f"ingest-decoder-{self.worker}", daemon=True)
        self._thread = threading.Thread(target=self._run, name=f"ingest-writer-{self.worker}", daemon=True)
        self._decoder.start()
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop taking messages, write what is queued, acknowledge it, then return."""
        self._stopping.set()
        deadline = time.monotonic() + timeout
        for thread in (self._decoder, self._thread):
            if thread is not None:
                thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread is not None and self._thread.is_alive():
            log.warning("ingest writer did not finish within %.0f s; unacknowledged messages will be redelivered", timeout)

    def __enter__(self) -> IngestPipeline:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def queue_capacity(self) -> int:
        return self._queue_size

    def oldest_waiting(self) -> float | None:
        """Receive time (epoch s) of the oldest message whose batch the listeners have not yet
        been given, None if idle. A listener that reads this before taking what it was given
        has seen everything received before the returned time."""
        marks = [self._writing_since]
        marks.extend(d.since for d in list(self._handoff) if d is not None)
        marks.append(self._decoding_since)
        try:
            head = self._queue[0]
        except IndexError:
            head = None
        if type(head) is Incoming:
            marks.append(head.received)
        marks = [m for m in marks if m]
        return min(marks) if marks else None

    # -- decoder thread ------------------------------------------------------------------
    def _decode_loop(self) -> None:
        try:
            while True:
                decoded = self._collect()
                if decoded is None:
                    break  # stopping and drained
                while self._handoff:  # the writer still has one waiting
                    if self._writer_gone.is_set():
                        return  # the writer gave up (stopping with the database down)
                    self._handoff_free.clear()
                    if self._handoff:
                        self._handoff_free.wait(0.1)
                self._handoff.append(decoded)
                self._decoding_since = 0.0  # only now: the handoff shows the batch
                self._handoff_ready.set()
        finally:
            self._handoff.append(None)
            self._handoff_ready.set()

    # -- writer thread -------------------------------------------------------------------
    def _next_decoded(self) -> _Decoded | None:
        """The decoder's next batch, marked as being written before the handoff lets it go."""
        while True:
            try:
                decoded = self._handoff[0]
            except IndexError:
                self._handoff_ready.clear()
                if not self._handoff:
                    self._handoff_ready.wait(0.1)
                continue
            if decoded is not None:
                self._writing_since = decoded.since
            self._handoff.popleft()
            self._handoff_free.set()
            return decoded

    def _run(self) -> None:
        try:
            self._write_loop()
        finally:
            self._writer_gone.set()
            self._handoff_free.set()

    def _write_loop(self) -> None:
        writer: BatchWriter | None = None
        pending: _Decoded | None = None
        backoff = 0.5
        while True:
            if pending is None:
                pending = self._next_decoded()
                if pending is None:
                    break  # the decoder stopped and everything it made is written
            batch, tokens, callbacks, first_at = pending.batch, pending.tokens, pending.callbacks, pending.first_at
            if len(batch) == 0 and not batch.seen and not tokens:
                pending = None
                self._writing_since = 0.0
                for cb in callbacks:
                    cb()
                continue
            try:
                if writer is None:
                    writer = BatchWriter(connect(self.dsn, application_name=f"hub-ingest-{self.worker}"), worker=self.worker, sinks=self.sinks)
                started = time.perf_counter()
                result = writer.write(batch)
            except (psycopg.OperationalError, psycopg.InterfaceError, StoreError) as exc:
                self.stats.write_errors += 1
                log.warning("database unavailable, keeping %d messages and retrying in %.1f s: %s",
                            batch.messages, backoff, str(exc).strip().splitlines()[0] if str(exc) else exc)
                if writer is not None:
                    with contextlib.suppress(psycopg.Error):
                        writer.conn.close()
                writer = None
                if self._stopping.is_set() and backoff > 4:
                    log.error("stopping with the database down: %d messages stay unacknowledged and will be redelivered", batch.messages)
                    break
                time.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            backoff = 0.5
            pending = None
            self._after_commit(batch, result, tokens, callbacks, started, first_at)
            self._writing_since = 0.0  # only now: the listeners hold the batch
        if writer is not None:
            writer.conn.close()

    def _collect(self) -> _Decoded | None:
        """Gather items until the batch is full or `batch_ms` passed since the first one."""
        batch = Batch()
        tokens: list[Any] = []
        callbacks: list[Callable[[], None]] = []
        q = self._queue
        catalog, limits = self.catalog, self.limits
        first_at = 0.0
        deadline = 0.0
        while True:
            if not q:
                if not first_at:
                    if self._stopping.is_set():
                        return None
                    self._wakeup.clear()
                    if not q:
                        self._wakeup.wait(0.1)
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stopping.is_set():
                    break
                self._wakeup.clear()
                if not q:
                    self._wakeup.wait(min(remaining, 0.01))
                continue
            item = q[0]  # peek, mark, then pop: the item is never invisible to oldest_waiting
            if not first_at:
                first_at = time.time()
                deadline = time.monotonic() + self.batch_s
                self._decoding_since = item.received if type(item) is Incoming else first_at
            q.popleft()
            if type(item) is Incoming:
                received = datetime.fromtimestamp(item.received, UTC)
                dead = len(batch.dead)
                decode_message(item.topic, item.payload, received, catalog, limits, batch)
                if item.redelivered and len(batch.dead) > dead:
                    batch.dead_redelivered.append(batch.dead.pop())
                if item.token is not None:
                    tokens.append(item.token)
            else:
                assert isinstance(item, Prepared)
                _merge(batch, item.batch)
                if item.done is not None:
                    callbacks.append(item.done)
            if len(batch.readings) >= self.batch_rows or batch.messages >= self.batch_rows:
                break
        return _Decoded(batch, tokens, callbacks, first_at, self._decoding_since)

    def _after_commit(self, batch: Batch, result: WriteResult, tokens: list[Any], callbacks: list[Callable[[], None]], started: float, first_at: float) -> None:
        now = time.time()
        if tokens and self.acker is not None:
            try:
                self.acker(tokens)
            except Exception:  # an ack failure only means a redelivery, which is idempotent
                log.exception("acknowledging %d messages failed; the broker will redeliver them", len(tokens))
        for cb in callbacks:
            cb()
        if batch.readings:
            self.mark_dirty(min(r[0] for r in batch.readings))
        s = self.stats
        s.messages += batch.messages
        s.readings += result.readings
        s.events += result.events
        s.dead_letters += result.dead
        s.batches += 1
        s.dedup_batches += result.deduplicated
        s.last_batch_ms = (time.perf_counter() - started) * 1000
        s.batch_ms_total += s.last_batch_ms
        s.oldest_wait_ms = (now - first_at) * 1000 if first_at else 0.0
        s.queue_depth = len(self._queue)
        if self.listeners:
            committed = Committed(batch, result, datetime.fromtimestamp(now, UTC))
            for listener in self.listeners:
                try:
                    listener(committed)
                except Exception:
                    log.exception("ingest listener %r failed", listener)


def _merge(into: Batch, other: Batch) -> None:
    into.readings.extend(other.readings)
    into.events.extend(other.events)
    into.dead.extend(other.dead)
    into.dead_redelivered.extend(other.dead_redelivered)
    into.status.extend(other.status)
    into.replies.extend(other.replies)
    for device_id, at in other.seen.items():
        seen = into.seen.get(device_id)
        if seen is None or at > seen:
            into.seen[device_id] = at
    into.messages += other.messages
