"""Continuous batching: several requests decoded together in one llama.cpp
context, as llama-server's slots are.

One thread, the scheduler, owns the context. Each step it admits waiting
requests into free sequences (slots), builds one `llama_batch` of one token
for every sequence that is generating and chunks of the prompts being
evaluated (up to n_batch tokens in all), decodes it, and hands each request
its own rows of logits (batch_work.py samples each with its own sampler). A
request that arrives between two steps joins at the next one; one whose
caller went away is dropped at the next step and its slot is free again.

Each sequence has a KV stream of its own (`kv_unified` off, llama-server's
default for `-np N`), `slot_context` cells long: a reply's numbers do not
depend on what else is running (with one pool of cells, where a sequence's
cells sit changes how llama.cpp's kernels round, and the same seed gave
another reply beside other requests), attention reads only the sequence's
own cells, and no admitted request can run out of room.

A system prompt long enough to be worth it (a persona with its knowledge)
is evaluated once into a holder sequence, or restored from the disk state
cache, and every request that starts with it gets a copy by
`llama_memory_seq_cp`: its own question is all it evaluates. Across streams
llama.cpp copies whole streams, and only at the start of the next
`llama_decode`; so a holder involved in a copy not yet made is neither
evicted nor saved until a decode has made it. A finished sequence keeps its
tokens, so a conversation's next turn (or a persona's reply after its
coverage judgement) reuses them in the slot holding the longest common
prefix, as llama-server's prompt cache does.

Requests sent together to an idle scheduler are prefilled together (see
`_gathered`); otherwise the first of four clients that sent at once was
prefilled alone while the others were still being tokenized, and they
waited its whole prefill step (1.4 s on the 1.5B here) before theirs began.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from chatllm.engine.batch_work import Feed, Work
from chatllm.engine.bindings import llama_bindings
from chatllm.errors import EngineError

if TYPE_CHECKING:
    from chatllm.engine.state_cache import PrefixStateCache

llama_cpp = llama_bindings()

# What a request cancelled from elsewhere (its client went away) raises in its caller.
CANCELLED = EngineError("the request was cancelled: its client went away")
# Sequences kept for shared prefixes (distinct system prompts held at once):
# each is a stream of `slot_context` cells, as much memory as a slot.
PREFIX_HOLDERS = 2
# The longest a prefill waits for requests announced but not yet submitted
# (seconds after the first waiting one was submitted): four requests sent at
# once reach the scheduler within ~30 ms of each other.
GATHER_S = 0.1
# How long a prefill waits for requests not announced: clients that sent
# within this of each other are prefilled together; a lone request pays it
# once, against a prefill of 100 ms or more on a CPU.
SETTLE_S = 0.01


@dataclass(eq=False)
class Slot:
    """One sequence of the context, and the request it is working for."""

    seq_id: int
    tokens: list[int] = field(default_factory=list)  # what its KV cells hold, in position order
    work: Work | None = None
    feed: Feed | None = None  # what it evaluates next, once its prompt is in
    evaluated: int = 0  # prompt tokens this request evaluated itself
    admitted: int = 0  # admission order: prompts are evaluated first come, first served
    holder: Holder | None = None  # a shared prefix this slot is evaluating for others

    @property
    def state(self) -> str:
        if self.work is None:
            return "idle"
        return "prefill" if self.feed is None else "generating"


@dataclass(eq=False)
class Holder:
    """A sequence holding one shared prefix, ready once evaluated or loaded."""

    seq_id: int
    tokens: tuple[int, ...]
    ready: bool = False
    # The decode count when a copy from or to it was asked for: until a decode
    # has made that copy, its stream must not be reused or read.
    touched: int = 0


class Scheduler:
    """Owns `context` from `start()` to `close()`; requests come in by `submit`."""

    def __init__(
        self,
        context: Any,
        slots: int,
        slot_context: int,
        state_cache: PrefixStateCache | None = None,
    ) -> None:
        self._context = context
        self._memory = llama_cpp.llama_get_memory(context)
        self._n_batch = llama_cpp.llama_n_batch(context)
        self.slot_context = slot_context
        self._slots = [Slot(i) for i in range(slots)]
        self._free_holders = list(range(slots, slots + PREFIX_HOLDERS))
        self._holders: collections.OrderedDict[tuple[int, ...], Holder] = collections.OrderedDict()
        self._state_cache = state_cache
        self._pending: collections.deque[Work] = collections.deque()
        self._expected: set[int] = set()  # threads preparing a request they announced
        self._wake = threading.Condition()
        self._closing = False
        self._admitted = 0
        self._decodes = 0
        self._unsaved: list[Holder] = []  # filled holders to save once their copy is made
        self._batch = llama_cpp.llama_batch_init(self._n_batch, 0, 1)
        self._thread = threading.Thread(target=self._run, name="chatllm-batch", daemon=True)
        self._thread.start()

    # ---- the callers' side ----------------------------------------------------

    def expect(self, thread: int) -> None:
        """Thread `thread` is preparing a request it will submit soon."""
        with self._wake:
            self._expected.add(thread)

    def unexpect(self, thread: int) -> None:
        """Thread `thread` will not submit (it failed, or it is done)."""
        with self._wake:
            if thread in self._expected:
                self._expected.discard(thread)
                self._wake.notify()

    def submit(self, work: Work) -> None:
        with self._wake:
            if self._closing:
                raise EngineError("the model has been closed")
            self._expected.discard(threading.get_ident())
            self._pending.append(work)
            self._wake.notify()

    def cancel(self, work: Work) -> None:
        """The caller stopped reading: the slot is freed at the next step."""
        work.cancelled = True
        with self._wake:
            self._wake.notify()

    def slot_states(self) -> list[str]:
        return [slot.state for slot in self._slots]

    def queue_depth(self) -> int:
        return len(self._pending)

    def close(self) -> None:
        """Stop after the current step; every request still open ends with an error."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        if self._thread is not threading.current_thread():
            self._thread.join()

    # ---- the scheduler's thread ------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                with self._wake:
                    while not self._closing and not self._pending and not any(s.work for s in self._slots):
                        self._wake.wait()
                    if self._closing:
                        break
                self._step()
        except BaseException as error:  # a bug: fail every request rather than hang them
            self._fail_all(EngineError(f"the batch scheduler stopped: {type(error).__name__}: {error}"))
            raise
        finally:
            self._fail_all(EngineError("the model was closed during generation"))
            llama_cpp.llama_batch_free(self._batch)

    def _fail_all(self, error: EngineError) -> None:
        with self._wake:
            self._closing = True
            waiting, self._pending = list(self._pending), collections.deque()
        for work in waiting:
            work.fail(error)
        for slot in self._slots:
            if slot.work is not None:
                self._release(slot, error)

    def _step(self) -> None:
        for slot in self._slots:
            if slot.work is not None and slot.work.cancelled:
                self._release(slot, CANCELLED)
        if self._gathered():
            self._admit()
        if self._closing:
            return
        rows = self._build_batch()
        if not rows:
            self._idle()
            return
        result = llama_cpp.llama_decode(self._context, self._batch)
        llama_cpp.llama_synchronize(self._context)  # a GPU backend may still be running
        if result != 0:
            self._decode_failed(result, rows)
            return
        self._decodes += 1
        self._save_holders()
        for slot, (tokens, first_row) in rows.items():
            self._advance(slot, tokens, first_row)

    def _idle(self) -> None:
        """Nothing to decode this step (what was waiting was cancelled): wait
        for a request, briefly."""
        with self._wake:
            if not self._closing:
                self._wake.wait(0.05)

    # ---- admission and shared prefixes ----------------------------------------

    def _gathered(self) -> bool:
        """Whether to admit what waits now. While nothing is generated, requests
        sent together may join one prefill, while slots are free: SETTLE_S after
        the first was submitted, GATHER_S at most while announced ones (`expect`)
        are being prepared. Else a request joins the next step, as in
        llama-server (waiting would stall every running stream)."""
        with self._wake:
            if not self._pending or any(slot.work is not None for slot in self._slots):
                return True
            submitted = self._pending[0].submitted
            while not self._closing:  # every slot is free: only this thread places work
                until = submitted + (GATHER_S if self._expected else SETTLE_S)
                left = until - time.perf_counter()
                if len(self._pending) >= len(self._slots) or left <= 0:
                    return True
                self._wake.wait(left)
            return False

    def _admit(self) -> None:
        with self._wake:
            waiting = list(self._pending)
        for work in waiting:
            if work.cancelled:
                self._drop_pending(work)
                work.fail(CANCELLED)  # wakes a caller still waiting (one that left reads nothing)
                continue
            free = [slot for slot in self._slots if slot.work is None]
            if not free:
                break
            key = tuple(work.prompt[: work.prefix])
            holder = self._holders.get(key) if key else None
            if holder is not None and not holder.ready:
                continue  # another slot is evaluating this prefix: wait for it
            self._drop_pending(work)
            self._place(work, free, key)

    def _drop_pending(self, work: Work) -> None:
        with self._wake:
            try:
                self._pending.remove(work)
            except ValueError:
                pass

    def _place(self, work: Work, free: list[Slot], key: tuple[int, ...]) -> None:
        prompt = work.prompt
        slot = max(free, key=lambda s: _common_prefix(s.tokens, prompt))
        keep = _common_prefix(slot.tokens, prompt)
        holder = None
        if key and keep < len(key):
            holder = self._holders.get(key) or self._new_holder(key)
        if holder is not None and holder.ready:
            llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, -1, -1)
            llama_cpp.llama_memory_seq_cp(self._memory, holder.seq_id, slot.seq_id, -1, -1)
            slot.tokens = list(key)
            holder.touched = self._decodes
            self._holders.move_to_end(key)
        else:
            self._truncate(slot, keep)
            slot.holder = holder  # this slot evaluates the prefix for the others
        self._admitted += 1
        slot.work, slot.feed, slot.evaluated, slot.admitted = work, None, 0, self._admitted
        work.begin(len(slot.tokens))

    def _new_holder(self, key: tuple[int, ...]) -> Holder | None:
        """A holder for `key`: restored from the disk cache when saved there
        (ready), else empty for the slot that evaluates it. None when no room."""
        if not self._free_holders:
            # The least recently used holder no copy is waiting on.
            oldest = next((h for h in self._holders.values() if h.ready and h.touched < self._decodes), None)
            if oldest is None:
                return None
            self._drop_holder(oldest)
        holder = Holder(self._free_holders.pop(), key, touched=self._decodes)
        self._holders[key] = holder
        cache = self._state_cache
        if cache is not None and cache.has(key):
            llama_cpp.llama_memory_seq_rm(self._memory, holder.seq_id, -1, -1)
            holder.ready = cache.load(self._context, key, seq_id=holder.seq_id)
            if not holder.ready:
                llama_cpp.llama_memory_seq_rm(self._memory, holder.seq_id, -1, -1)
        return holder

    def _drop_holder(self, holder: Holder) -> None:
        llama_cpp.llama_memory_seq_rm(self._memory, holder.seq_id, -1, -1)
        self._holders.pop(holder.tokens, None)
        self._free_holders.append(holder.seq_id)

    def _fill_holder(self, slot: Slot) -> None:
        """The slot has evaluated the shared prefix: copy its cells to the holder."""
        holder = slot.holder
        assert holder is not None
        slot.holder = None
        if self._holders.get(holder.tokens) is not holder:
            return
        # Whole sequences only: across streams llama.cpp copies a stream whole.
        llama_cpp.llama_memory_seq_rm(self._memory, holder.seq_id, -1, -1)
        llama_cpp.llama_memory_seq_cp(self._memory, slot.seq_id, holder.seq_id, -1, -1)
        llama_cpp.llama_memory_seq_rm(self._memory, holder.seq_id, len(holder.tokens), -1)
        holder.ready, holder.touched = True, self._decodes
        if self._state_cache is not None:
            self._unsaved.append(holder)

    def _save_holders(self) -> None:
        """Save the holders whose copy the last decode made."""
        assert self._state_cache is not None or not self._unsaved
        for holder in [h for h in self._unsaved if h.touched < self._decodes]:
            self._unsaved.remove(holder)
            if self._holders.get(holder.tokens) is holder and self._state_cache is not None:
                self._state_cache.save(self._context, holder.tokens, seq_id=holder.seq_id)

    # ---- one step ---------------------------------------------------------------

    def _build_batch(self) -> dict[Slot, tuple[int, int]]:
        """Fill the batch: each running sequence's feed, then prompt chunks in
        admission order. Returns, per slot, (tokens added, index of its first row)."""
        batch, added = self._batch, {}
        count = 0
        running = [s for s in self._slots if s.work is not None and s.feed is not None]
        for slot in running:
            feed = slot.feed
            assert feed is not None
            if feed.rewind is not None and feed.rewind < len(slot.tokens):
                self._truncate(slot, feed.rewind)
            first = count
            for index, token in enumerate(feed.tokens):
                last = index == len(feed.tokens) - 1
                self._put(count, token, len(slot.tokens) + index, slot.seq_id, feed.all_logits or last)
                count += 1
            added[slot] = (len(feed.tokens), first if feed.all_logits else count - 1)
        filling = sorted((s for s in self._slots if s.work is not None and s.feed is None), key=lambda s: s.admitted)
        for slot in filling:
            assert slot.work is not None
            prompt = slot.work.prompt
            chunk = prompt[len(slot.tokens) : len(slot.tokens) + self._n_batch - count]
            if not chunk:
                break
            end = len(slot.tokens) + len(chunk)
            for index, token in enumerate(chunk):
                self._put(
                    count, token, len(slot.tokens) + index, slot.seq_id, end == len(prompt) and index == len(chunk) - 1
                )
                count += 1
            added[slot] = (len(chunk), count - 1)
        batch.n_tokens = count
        return added

    def _put(self, index: int, token: int, position: int, seq_id: int, logits: bool) -> None:
        batch = self._batch
        batch.token[index] = token
        batch.pos[index] = position
        batch.n_seq_id[index] = 1
        batch.seq_id[index][0] = seq_id
        batch.logits[index] = logits

    def _advance(self, slot: Slot, count: int, row: int) -> None:
        """After the decode: record what the slot now holds and let its request
        read its logits."""
        work = slot.work
        assert work is not None
        if slot.feed is None:  # a prompt chunk
            prompt = work.prompt
            slot.tokens += prompt[len(slot.tokens) : len(slot.tokens) + count]
            slot.evaluated += count
            if slot.holder is not None and len(slot.tokens) >= len(slot.holder.tokens):
                self._fill_holder(slot)
            if len(slot.tokens) < len(prompt):
                return
            work.prefilled(slot.evaluated)
            self._continue(slot, lambda: work.first(self._context, row))
            return
        slot.tokens += slot.feed.tokens
        rows = range(row, row + count) if slot.feed.all_logits else [row]
        self._continue(slot, lambda: work.next(self._context, rows))

    def _continue(self, slot: Slot, step: Callable[[], Feed | None]) -> None:
        try:
            feed = step()
        except Exception as error:  # e.g. a grammar llama.cpp gave up on
            self._release(slot, EngineError(f"generation failed: {error}"))
            return
        if feed is None:
            slot.work, slot.feed = None, None
        elif len(slot.tokens) + len(feed.tokens) > self.slot_context and feed.rewind is None:
            self._release(slot, EngineError("the reply outgrew its share of the context"))
        else:
            slot.feed = feed

    def _decode_failed(self, result: int, rows: dict[Slot, tuple[int, int]]) -> None:
        """llama.cpp could not decode the batch: the requests in it fail, and
        their sequences start empty (a failed decode may leave part of the batch)."""
        for slot in rows:
            self._truncate(slot, 0)
            self._release(slot, EngineError(f"llama.cpp failed to decode (llama_decode returned {result})"))

    def _release(self, slot: Slot, error: EngineError | None = None) -> None:
        work = slot.work
        if slot.holder is not None:  # the prefix it was evaluating never got there
            if self._holders.get(slot.holder.tokens) is slot.holder and not slot.holder.ready:
                self._drop_holder(slot.holder)
            slot.holder = None
        slot.work, slot.feed = None, None
        if work is not None:
            work.fail(error) if error is not None else work.end()

    def _truncate(self, slot: Slot, keep: int) -> None:
        """Make the slot's cells hold exactly its first `keep` tokens."""
        if keep <= 0 or not llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, keep, -1):
            llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, -1, -1)
            keep = 0
        del slot.tokens[keep:]


def _common_prefix(held: list[int], prompt: list[int]) -> int:
    """Tokens `held` shares with the start of `prompt`, short of its last token
    (always evaluated, for its logits)."""
    limit = min(len(held), len(prompt) - 1)
    count = 0
    while count < limit and held[count] == prompt[count]:
        count += 1
    return count
