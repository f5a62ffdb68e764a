"""Server-side batching of concurrent requests (TF Serving's batching session).

Requests for the same (model, version, signature) wait in a queue until either
a full batch is queued or the oldest has waited ``batch_timeout_micros``; a
worker thread then concatenates their inputs along dimension 0, runs the model
once, and splits every output back along dimension 0. Like TF Serving
(``shared_batch_scheduler.h``, ``batching_session.cc``):

* only signatures whose inputs and outputs all have a batch dimension are
  batched (the caller checks :attr:`SignatureInfo.batchable`);
* a request with more rows than ``max_batch_size`` is rejected alone with
  INVALID_ARGUMENT ("Task size N is larger than maximum input batch size M"),
  so it never blocks the queue for the others;
* with ``enable_large_batch_splitting`` a request that does not fit the open
  batch is split: the first piece fills the open batch, the rest go in pieces
  of ``max_execution_batch_size`` rows; the answer is the pieces' outputs
  joined back (and the first piece's error if one fails);
* with ``pad_variable_length_inputs`` differing non-batch dimensions are padded
  at the end with the dtype's zero (``b""`` for strings, 0 for numbers); without
  it only requests with identical shapes are merged;
* ``allowed_batch_sizes`` pads a merged batch up to the next allowed size by
  repeating its first row (those outputs are dropped);
* a full queue (``max_enqueued_batches`` batches) answers UNAVAILABLE.

Unlike TF Serving, when a merged batch fails (e.g. one request has ``k = 0``)
each request is re-run alone so only the faulty one gets the error, and the
queue is counted in rows (``max_enqueued_batches`` full batches) rather than
in formed batches. Outputs keep the merged batch's non-batch shape: e.g. a
retrieval request with ``k=5`` batched with one with ``k=10`` gets 10 columns,
best first (the client truncates to ``k``); split pieces are padded the same
way when joined.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Hashable, Mapping
from concurrent.futures import Future, InvalidStateError

import grpc
import numpy as np

from tfrec.serving.errors import ServingError, invalid_argument, unavailable
from tfrec.serving.model_config import BatchingConfig

log = logging.getLogger(__name__)

Arrays = dict[str, np.ndarray]
RunFn = Callable[[Mapping[str, np.ndarray]], Arrays]
QUEUE_FULL = "The batch scheduling queue to which this task was submitted is full"


@dataclasses.dataclass(eq=False)  # hashed by identity (the set of running tasks)
class _Task:
    inputs: Mapping[str, np.ndarray]
    size: int
    enqueued: float
    future: Future


@dataclasses.dataclass
class _Queue:
    run_fn: RunFn
    tasks: collections.deque[_Task] = dataclasses.field(default_factory=collections.deque)
    rows: int = 0


def batch_size_of(inputs: Mapping[str, np.ndarray]) -> int | None:
    """The common leading dimension of all inputs, or None if they disagree or are scalars."""
    sizes = {a.shape[0] if a.ndim else None for a in inputs.values()}
    return sizes.pop() if len(sizes) == 1 else None


def _pad_value(dtype: np.dtype) -> object:
    return b"" if dtype.kind == "O" else dtype.type(0)


def merge_inputs(parts: list[Mapping[str, np.ndarray]], total_rows: int) -> Arrays:
    """Concatenates inputs along dim 0, padding smaller non-batch dims at the end.

    Args:
        parts: Per-request inputs (same names and ranks).
        total_rows: Rows of the result (>= the sum of the parts; extra rows
            repeat the first row, for ``allowed_batch_sizes``).

    Returns:
        Name -> merged array ``[total_rows, max dims...]``.
    """
    merged = {}
    rows = sum(next(iter(p.values())).shape[0] for p in parts)
    for name in parts[0]:
        arrays = [p[name] for p in parts]
        if rows == total_rows and len({(a.shape[1:], a.dtype) for a in arrays}) == 1:
            merged[name] = np.concatenate(arrays)  # same inner shape: no padding needed
            continue
        inner = tuple(max(dims) for dims in zip(*(a.shape[1:] for a in arrays), strict=True))
        out = np.full((total_rows, *inner), _pad_value(arrays[0].dtype), dtype=arrays[0].dtype)
        offset = 0
        for array in arrays:
            region = (
                slice(offset, offset + array.shape[0]),
                *(slice(0, d) for d in array.shape[1:]),
            )
            out[region] = array
            offset += array.shape[0]
        if offset < total_rows and offset > 0:
            out[offset:] = out[0]
        merged[name] = out
    return merged


def _settle(
    future: Future, result: Arrays | None = None, error: BaseException | None = None
) -> None:
    """Resolves ``future`` unless it already is (e.g. failed by a shutdown deadline)."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except InvalidStateError:  # already resolved
        pass


def _joined(pieces: list[Future]) -> Future:
    """A future resolving to the pieces' outputs concatenated along dim 0 (split requests)."""
    joined: Future = Future()
    remaining = [len(pieces)]
    lock = threading.Lock()

    def on_done(_piece: Future) -> None:
        with lock:
            remaining[0] -= 1
            if remaining[0]:
                return
        errors = [p.exception() for p in pieces if p.exception() is not None]
        if errors:
            _settle(joined, error=errors[0])
            return
        parts = [p.result() for p in pieces]
        if any(a.ndim == 0 for part in parts for a in part.values()):
            _settle(joined, error=ServingError(grpc.StatusCode.INTERNAL, "scalar batch output"))
            return
        rows = sum(next(iter(part.values())).shape[0] for part in parts)
        _settle(joined, merge_inputs(parts, rows))

    for piece in pieces:
        piece.add_done_callback(on_done)
    return joined


class BatchScheduler:
    """Merges concurrent requests per key and runs them on worker threads.

    Args:
        config: Batching parameters.
    """

    def __init__(self, config: BatchingConfig):
        self.config = config
        self._timeout = config.batch_timeout_micros / 1e6
        self._input_limit = config.max_batch_size
        self._max_rows = config.execution_batch_size
        self._split = config.enable_large_batch_splitting
        self._queue_rows = self._max_rows * config.max_enqueued_batches
        self._cond = threading.Condition(threading.Lock())  # never re-entered
        self._queues: dict[Hashable, _Queue] = {}
        self._running: set[_Task] = set()
        self._closing = False
        self._flushing = False  # shutting down: run every queued batch at once
        self.batches_run = 0
        self.tasks_run = 0
        self._threads = [
            threading.Thread(target=self._worker, name=f"tfrec-batch-{i}", daemon=True)
            for i in range(config.num_batch_threads)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, key: Hashable, run_fn: RunFn, inputs: Mapping[str, np.ndarray]) -> Future:
        """Queues a request; the future resolves to its outputs (or a ServingError).

        Args:
            key: Requests with the same key may be merged (model, version, signature).
            run_fn: Runs the model on merged inputs.
            inputs: Validated inputs sharing one leading dimension.

        Raises:
            ServingError: INVALID_ARGUMENT if the inputs do not share a batch
                dimension or have more rows than ``max_batch_size``;
                UNAVAILABLE when shutting down or the queue is full.
        """
        size = batch_size_of(inputs)
        if size is None:
            raise invalid_argument(
                "batching needs every input to have the same leading (batch) dimension, got "
                + str({name: list(a.shape) for name, a in inputs.items()})
            )
        if size > self._input_limit:
            raise invalid_argument(
                f"Task size {size} is larger than maximum input batch size {self._input_limit}"
            )
        now = time.monotonic()
        with self._cond:
            if self._closing:
                raise unavailable("server is shutting down")
            queue = self._queues.get(key)
            if queue is None:
                queue = self._queues[key] = _Queue(run_fn=run_fn)
            self._check_capacity(queue, size)
            pieces = self._pieces(queue, size)
            if len(pieces) == 1:  # the usual case: queued whole, no slicing
                tasks = [_Task(inputs=inputs, size=size, enqueued=now, future=Future())]
            else:
                tasks, start = [], 0
                for rows in pieces:
                    part = {n: a[start : start + rows] for n, a in inputs.items()}
                    tasks.append(_Task(inputs=part, size=rows, enqueued=now, future=Future()))
                    start += rows
            queue.run_fn = run_fn
            queue.tasks.extend(tasks)
            queue.rows += size
            self._cond.notify()
        return tasks[0].future if len(tasks) == 1 else _joined([t.future for t in tasks])

    def _check_capacity(self, queue: _Queue, size: int) -> None:
        """UNAVAILABLE when ``size`` more rows do not fit (lock held)."""
        if queue.rows + size <= self._queue_rows:
            return
        if self._split:
            raise unavailable(
                f"{QUEUE_FULL}; task size is {size} but scheduling capacity is only "
                f"{self._queue_rows - queue.rows} (max_enqueued_batches="
                f"{self.config.max_enqueued_batches}, max_execution_batch_size={self._max_rows})"
            )
        batches = -(-queue.rows // self._max_rows)
        raise unavailable(
            f"{QUEUE_FULL}; currently {batches} batches enqueued and max_enqueued_batches is "
            f"{self.config.max_enqueued_batches}"
        )

    def _pieces(self, queue: _Queue, size: int) -> list[int]:
        """Row counts a request is queued as: one piece, or split pieces (lock held)."""
        open_room = self._max_rows - queue.rows % self._max_rows
        if not self._split or size <= open_room:
            return [size]
        pieces, left = [open_room], size - open_room
        while left > 0:
            pieces.append(min(left, self._max_rows))
            left -= pieces[-1]
        return pieces

    def run(self, key: Hashable, run_fn: RunFn, inputs: Mapping[str, np.ndarray]) -> Arrays:
        """Like :meth:`submit` but waits for the outputs (raises the request's ServingError)."""
        return self.submit(key, run_fn, inputs).result()

    def flush(self) -> None:
        """From now on runs queued requests at once instead of waiting for their batch.

        Used at shutdown while in-flight requests may still be submitted.
        """
        with self._cond:
            self._flushing = True
            self._cond.notify_all()

    def stop(self, timeout: float = 60.0) -> int:
        """Runs everything still queued right away, then stops the workers.

        Args:
            timeout: Seconds to wait for queued and running batches; requests
                still unanswered then get UNAVAILABLE (their batch may still be
                running: its result is dropped).

        Returns:
            How many requests were failed at the deadline.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            self._closing = self._flushing = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        with self._cond:
            late = [t for q in self._queues.values() for t in q.tasks] + list(self._running)
            self._queues.clear()
        error = unavailable("server is shutting down: the request outlasted the shutdown grace")
        pending = [t for t in late if not t.future.done()]
        for task in pending:
            _settle(task.future, error=error)
        if pending:
            log.warning("batching: %d requests unanswered at the shutdown deadline", len(pending))
        return len(pending)

    # ------------------------------------------------------------------------ workers

    def _take(self, queue: _Queue) -> list[_Task]:
        """Pops a batch of compatible tasks from the front of ``queue`` (lock held)."""
        head = queue.tasks[0]
        shapes = {n: a.shape[1:] for n, a in head.inputs.items()}
        pad = self.config.pad_variable_length_inputs
        batch, rows, keep = [], 0, collections.deque()
        while queue.tasks:
            task = queue.tasks.popleft()
            compatible = pad or all(task.inputs[n].shape[1:] == s for n, s in shapes.items())
            if not batch or (compatible and rows + task.size <= self._max_rows):
                batch.append(task)
                rows += task.size
            else:
                keep.append(task)
        queue.tasks = keep
        queue.rows -= rows
        self._running.update(batch)
        return batch

    def _next(self) -> tuple[RunFn, list[_Task]] | float | None:
        """A due batch, else seconds until one is due (None: nothing queued)."""
        now, wait, due, due_key = time.monotonic(), None, None, None
        for key, queue in self._queues.items():
            if not queue.tasks:
                continue
            deadline = queue.tasks[0].enqueued + self._timeout
            if self._flushing or queue.rows >= self._max_rows or deadline <= now:
                if due is None or queue.tasks[0].enqueued < due.tasks[0].enqueued:
                    due, due_key = queue, key
            else:
                wait = deadline - now if wait is None else min(wait, deadline - now)
        if due is not None:
            run_fn, batch = due.run_fn, self._take(due)
            if not due.tasks:  # drop idle queues (they pin unloaded servables)
                del self._queues[due_key]
            return run_fn, batch
        return wait

    def _worker(self) -> None:
        while True:
            with self._cond:
                while True:
                    found = self._next()
                    if isinstance(found, tuple):
                        break
                    if found is None and self._closing:
                        return
                    self._cond.wait(timeout=found)
            try:
                self._execute(*found)
            finally:
                with self._cond:
                    self._running.difference_update(found[1])

    def _execute(self, run_fn: RunFn, tasks: list[_Task]) -> None:
        rows = sum(t.size for t in tasks)
        padded = next((s for s in self.config.allowed_batch_sizes if s >= rows), rows)
        with self._cond:
            self.batches_run += 1
            self.tasks_run += len(tasks)
        try:
            if len(tasks) == 1 and padded == rows:
                _settle(tasks[0].future, run_fn(tasks[0].inputs))
                return
            outputs = run_fn(merge_inputs([t.inputs for t in tasks], padded))
            bad = [n for n, a in outputs.items() if a.ndim == 0 or a.shape[0] != padded]
            if bad:
                raise ServingError(
                    grpc.StatusCode.INTERNAL,
                    f"batched outputs {bad} do not have the batch size {padded} as dimension 0",
                )
        except ServingError as err:
            if len(tasks) == 1:
                _settle(tasks[0].future, error=err)
                return
            log.debug("merged batch of %d failed (%s); re-running requests alone", len(tasks), err)
            for task in tasks:
                self._execute(run_fn, [task])
            return
        except BaseException as err:  # never lose a request
            for task in tasks:
                _settle(task.future, error=err)
            return
        offset = 0
        for task in tasks:
            _settle(task.future, {n: a[offset : offset + task.size] for n, a in outputs.items()})
            offset += task.size
