"""Several items of one job generated at once (issue 24): extract --jsonl's
lines, summarize's map steps.

An engine that decodes many sequences in one batch (engine/batched.py,
`--parallel N`) only batches what is asked of it at the same time, so each
item runs on a thread of its own, through exactly the code and the reply
pipeline it runs through alone, with a Meter of its own. The items come back
in input order, each added to the job's Meter as it is handed on; an item that
failed raises its error when its turn comes, after the items before it, and
what is still waiting is dropped. On an engine of one sequence (the fake
engine, a server) the items run one after another on the caller's thread,
as they always did.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from chatllm.engine.base import GenerationStats
from chatllm.reply.meter import Meter

Item = TypeVar("Item")
Result = TypeVar("Result")


@runtime_checkable
class Cancelling(Protocol):
    """An engine that can end what a thread waits for (engine/batched.py)."""

    def abandon(self, thread: int) -> None: ...


@dataclass(frozen=True)
class Done(Generic[Result]):
    """An item's result, and the stats of its last engine call (per thread on
    a batched engine, so read on the item's own thread)."""

    value: Result
    stats: GenerationStats


def width(meter: Meter, wanted: int, items: int) -> int:
    """How many items run at once: what was asked, what the engine can
    decode together, and no more than there are items."""
    return max(1, min(wanted, meter.engine.max_sequences, items))


def run_items(
    meter: Meter, items: Sequence[Item], work: Callable[[Meter, Item], Result], at_once: int
) -> Iterator[Done[Result]]:
    """`work(item_meter, item)` for each of `items`, up to `at_once` at a time;
    their results in input order."""
    threads = width(meter, at_once, len(items))
    if threads == 1:
        for item in items:
            yield _one(meter, work, item)
        return
    running: set[int] = set()  # the threads working on an item now
    pool = ThreadPoolExecutor(threads, thread_name_prefix="chatllm-item")
    futures = [pool.submit(_alone, meter, work, item, running) for item in items]
    finished = False
    try:
        for future in futures:
            done, item_meter = future.result()
            meter.include(item_meter)
            yield done
        finished = True
    finally:
        if not finished:  # an item failed, or the caller stopped (Ctrl-C)
            _stop(meter.engine, futures, running)
        pool.shutdown(wait=True, cancel_futures=True)


def _stop(engine: Any, futures: list[Future], running: set[int]) -> None:
    """Drop the items that wait, and have the engine end the ones that run at
    its next step (their threads raise), so the run stops at once and no
    thread still uses the engine when the command closes it."""
    for future in futures:
        future.cancel()
    while not all(future.done() for future in futures):
        if isinstance(engine, Cancelling):
            for thread in list(running):
                engine.abandon(thread)
        wait(futures, timeout=0.05)


def _one(meter: Meter, work: Callable[[Meter, Item], Result], item: Item) -> Done[Result]:
    value = work(meter, item)
    return Done(value, meter.engine.last_stats)


def _alone(
    meter: Meter, work: Callable[[Meter, Item], Result], item: Item, running: set[int]
) -> tuple[Done[Result], Meter]:
    """`item` with a Meter of its own (a Meter follows one call at a time)."""
    thread = threading.get_ident()
    running.add(thread)
    try:
        own = meter.alongside()
        return _one(own, work, item), own
    finally:
        running.discard(thread)
