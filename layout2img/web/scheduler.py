"""Who runs the model when: one model, turns for requests and background edits, and request batching.

:class:`ModelTurns` is the one lock on the model: a waiting request goes before background work
(edit jobs), and background work pauses between steps while a request waits. :class:`Batcher`
gathers generate requests that arrive together (up to ``max_batch``, waiting at most
``max_wait`` seconds for company while the model is free) into one call of the model, under
one request turn; while the model is busy, arrivals keep joining the batch that waits for it.
"""
from __future__ import annotations

import contextlib
import itertools
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Sequence

MAX_BATCH = 8
MAX_WAIT = 0.005  # seconds a batch waits for company when the model is free
#: Request turns in a row while background work waits, before the background gets one: requests
#: go first, but back-to-back generate clients cannot starve an edit (measured in BENCHMARKS).
MAX_REQUEST_STREAK = 2


class ModelTurns:
    """One model, several callers, one at a time: a waiting request (``request()``) goes before
    background work (``background()``, edit jobs), and background work that holds its turn for
    long calls ``pause()`` between steps, so a generate request waits one edit step, not a whole
    edit. After ``max_request_streak`` request turns in a row while background work waits, the
    background gets the next turn, so a stream of requests cannot starve it. Background turns are
    served in arrival order, so concurrent edits alternate steps."""

    def __init__(self, max_request_streak: int = MAX_REQUEST_STREAK):
        self._cond = threading.Condition()
        self._held = False
        self._requests_waiting = 0
        self._background: deque[int] = deque()  # tickets of waiting background work, in order
        self._next_ticket = 0
        self._max_streak = max_request_streak
        self._streak = 0  # request turns taken in a row while background work waited

    def _background_due(self) -> bool:
        return bool(self._background) and self._streak >= self._max_streak

    @contextlib.contextmanager
    def request(self):
        with self._cond:
            self._requests_waiting += 1
            try:
                while self._held or self._background_due():
                    self._cond.wait()
            finally:
                self._requests_waiting -= 1
            self._held = True
            self._streak = self._streak + 1 if self._background else 0
        try:
            yield
        finally:
            self._release()

    @contextlib.contextmanager
    def background(self):
        self._acquire_background()
        try:
            yield
        finally:
            self._release()

    @property
    def busy(self) -> bool:
        """Whether someone holds the model now."""
        with self._cond:
            return self._held

    def pause(self) -> None:
        """Let everything waiting go first, then take the turn back (call while holding one)."""
        with self._cond:
            if not self._requests_waiting and not self._background:
                return
        self._release()
        self._acquire_background()

    def _acquire_background(self) -> None:
        with self._cond:
            ticket = self._next_ticket
            self._next_ticket += 1
            self._background.append(ticket)
            try:
                while (self._held or self._background[0] != ticket
                       or (self._requests_waiting and not self._background_due())):
                    self._cond.wait()
            finally:
                self._background.remove(ticket)
            self._held, self._streak = True, 0
            self._cond.notify_all()  # the next ticket is first in line now

    def _release(self) -> None:
        with self._cond:
            self._held = False
            self._cond.notify_all()


@dataclass
class _Batch:
    key: Hashable
    items: list = field(default_factory=list)
    outcomes: list | None = None  # one result or exception per item, once run
    full: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)


class Batcher:
    """Runs ``run_batch(items) -> outcomes`` (one result or exception per item) on batches of
    items that share a key, under a request turn of ``turns``.

    The first caller of a batch leads it: it waits up to ``max_wait`` for others to join (less
    when the batch fills), then for the model; the batch closes when the model is its. The other
    callers wait for their outcome. Items with different keys never share a batch (the key says
    what one model call must have in common, e.g. its seed)."""

    def __init__(self, turns: ModelTurns, run_batch: Callable[[Sequence[Any]], list],
                 max_batch: int = MAX_BATCH, max_wait: float = MAX_WAIT):
        if max_batch < 1 or max_wait < 0:
            raise ValueError("max_batch must be >= 1 and max_wait >= 0")
        self.turns, self.run_batch = turns, run_batch
        self.max_batch, self.max_wait = max_batch, max_wait
        self._lock = threading.Lock()
        self._open: dict[Hashable, _Batch] = {}
        self._solo = itertools.count()
        #: How many batches of each size ran (for /api/info-like reports and tests).
        self.sizes: dict[int, int] = {}

    def pending(self) -> int:
        """Items in batches that have not closed yet (waiting for company or for the model)."""
        with self._lock:
            return sum(len(batch.items) for batch in self._open.values())

    def solo_key(self) -> Hashable:
        """A key no other item has: its item runs alone."""
        return ("solo", next(self._solo))

    def submit(self, key: Hashable, item: Any) -> tuple[Any, int]:
        """(outcome, batch size) of ``item``; its exception is raised here."""
        with self._lock:
            batch = self._open.get(key)
            leader = batch is None or len(batch.items) >= self.max_batch
            if leader:
                batch = self._open[key] = _Batch(key)
            index = len(batch.items)
            batch.items.append(item)
            if len(batch.items) >= self.max_batch:
                batch.full.set()
        if leader:
            self._lead(batch)
        else:
            batch.done.wait()
        outcome = batch.outcomes[index]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome, len(batch.outcomes)

    def _lead(self, batch: _Batch) -> None:
        try:
            if not self.turns.busy:  # a busy model gathers company anyway while we wait for it
                batch.full.wait(self.max_wait)
            with self.turns.request():
                with self._lock:
                    self._close(batch)
                    items = list(batch.items)
                outcomes = self._run(items)
        except Exception as e:  # a bug in run_batch: every caller of the batch gets it, none waits forever
            with self._lock:
                self._close(batch)
                outcomes = [e] * len(batch.items)
        else:
            with self._lock:
                self.sizes[len(items)] = self.sizes.get(len(items), 0) + 1
        batch.outcomes = outcomes
        batch.done.set()

    def _close(self, batch: _Batch) -> None:
        """No one joins ``batch`` from now on: later callers start another (call with the lock held)."""
        if self._open.get(batch.key) is batch:
            del self._open[batch.key]

    def _run(self, items: list) -> list:
        outcomes = self.run_batch(items)
        if len(outcomes) != len(items):
            raise RuntimeError(f"run_batch gave {len(outcomes)} outcomes for {len(items)} items")
        return outcomes
