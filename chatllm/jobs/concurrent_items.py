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

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

from chatllm.engine.base import GenerationStats
from chatllm.reply.meter import Meter

Item = TypeVar("Item")
Result = TypeVar("Result")


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
    pool = ThreadPoolExecutor(threads, thread_name_prefix="chatllm-item")
    futures = [pool.submit(_alone, meter, work, item) for item in items]
    finished = False
    try:
        for future in futures:
            done, item_meter = future.result()
            meter.include(item_meter)
            yield done
        finished = True
    finally:
        # An item failed, or the caller stopped (Ctrl-C): drop what waits. What
        # is running ends with the engine, which the command closes on its way out.
        for future in futures:
            future.cancel()
        pool.shutdown(wait=finished, cancel_futures=True)


def _one(meter: Meter, work: Callable[[Meter, Item], Result], item: Item) -> Done[Result]:
    value = work(meter, item)
    return Done(value, meter.engine.last_stats)


def _alone(meter: Meter, work: Callable[[Meter, Item], Result], item: Item) -> tuple[Done[Result], Meter]:
    """`item` with a Meter of its own (a Meter follows one call at a time)."""
    own = meter.alongside()
    return _one(own, work, item), own
