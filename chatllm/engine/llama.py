"""The llama.cpp backend: a local GGUF model through llama-cpp-python's C API.

Generation uses llama.cpp's own primitives (batched `llama_decode`, a native
sampler chain, `llama_token_to_piece`), not `Llama.create_chat_completion`, whose
per-token Python work costs 10-25% of decode speed on small models. Callers can
rely on: the model's own chat template, with message contents always tokenized
as plain text (typed `<|im_start|>` cannot forge a turn); KV reuse of the longest
common token prefix between calls; prefix states on disk with
`EngineOptions.state_cache_dir` (state_cache.py); and a complete `last_stats`
once the iterator ends or is closed early (finish_reason "interrupted").
"""

from __future__ import annotations

import codecs
import ctypes
import functools
import glob
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatllm.engine.base import (
    Capabilities,
    EngineOptions,
    EngineStream,
    FinishReason,
    GenerationParams,
    GenerationStats,
    Message,
    Timings,
)
from chatllm.engine.bindings import llama_bindings, quiet_log_callback
from chatllm.engine.reasoning import ThinkSplitter
from chatllm.engine.sampling import FORCED_CLOSE, PIECE_BUFFER, ReplySampler, Thinking, split_at_stop
from chatllm.engine.tool_grammar import ToolCalls
from chatllm.errors import EngineError, ModelError, UsageError
from chatllm.hub.models import ResolvedModel

llama_cpp = llama_bindings()  # the ctypes bindings alone: see bindings.py

# Only once the bindings are in place: importing llama_cpp's own package first
# would run its heavy __init__ (bindings.py says why that is avoided).
from llama_cpp._utils import suppress_stdout_stderr  # noqa: E402

if TYPE_CHECKING:
    from chatllm.engine.chat_prompt import ChatPrompt
    from chatllm.engine.state_cache import PrefixStateCache

DEFAULT_MAX_CONTEXT = 4096

# llama.cpp keeps the log callback as a raw C pointer: the ctypes object must live
# as long as the process, or the next log line calls freed memory (segfault).
_NATIVE_SILENT_LOG = quiet_log_callback()
_SILENT_LOG = _NATIVE_SILENT_LOG or llama_cpp.llama_log_callback(lambda level, text, user_data: None)
_backend_ready = False


def _configure_logging(verbose: bool) -> None:
    if verbose:
        from llama_cpp import _logger

        _logger.set_verbose(True)
        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))
    else:
        llama_cpp.llama_log_set(_SILENT_LOG, ctypes.c_void_p(0))


@contextmanager
def _quiet_native_work(verbose: bool) -> Iterator[None]:
    """Around llama.cpp's load steps, unless --verbose: its log is already silent
    without entering Python (see bindings.quiet_log_callback), so nothing else is
    touched and the main thread can keep printing meanwhile. Where no such
    callback exists, stdout and stderr go to /dev/null for the duration instead,
    and llama.cpp's own C logger writes there: a Python callback would take the
    GIL for each of the ~1,200 lines a load logs (a 78 ms load took 1.7 s with
    the main thread busy)."""
    if verbose or _NATIVE_SILENT_LOG is not None:
        yield
        return
    with suppress_stdout_stderr(disable=False):
        llama_cpp.llama_log_set(llama_cpp.llama_log_callback(), ctypes.c_void_p(0))  # a NULL callback
        try:
            yield
        finally:
            llama_cpp.llama_log_set(_SILENT_LOG, ctypes.c_void_p(0))


def weight_repacking_enabled(choice: bool | None = None) -> bool:
    """Whether llama.cpp may repack weights into its extra CPU buffer types (AMX,
    AVX/NEON repacks). The `weight_repack` setting (CHATLLM_WEIGHT_REPACK)
    decides; by default it is off only on CPUs that advertise AMX: in some VMs
    (Firecracker here) the AMX tile kernels llama.cpp uses for batches of more
    than one token die with SIGILL, and a crash during prefill is worse than the
    speed AMX gives where it works."""
    if choice is not None:
        return choice
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return "amx_tile" not in line.split()
    except OSError:
        pass
    return True


def physical_cores() -> int:
    """Physical cores this process may use (hyperthread siblings count once), the
    way llama-bench picks its default thread count on Linux."""
    try:
        allowed = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        allowed = os.cpu_count() or 1
    siblings = set()
    for path in glob.glob("/sys/devices/system/cpu/cpu[0-9]*/topology/thread_siblings"):
        try:
            siblings.add(Path(path).read_text().strip())
        except OSError:
            continue
    return max(1, min(len(siblings) or allowed, allowed))


def _auto_gpu_layers(path: Path, n_ctx: int | None) -> int:
    """As many layers as fit in free GPU memory beside a context of `n_ctx`
    (None: the model's, at most DEFAULT_MAX_CONTEXT)."""
    from chatllm.engine.gpu import choose_gpu_layers
    from chatllm.hub.gguf_info import read_gguf_info

    try:
        trained = read_gguf_info(path).context_length or DEFAULT_MAX_CONTEXT
    except Exception:  # an unreadable header fails properly at load
        trained = DEFAULT_MAX_CONTEXT
    return choose_gpu_layers(path, n_ctx or min(trained, DEFAULT_MAX_CONTEXT), "auto")


def _context_params(n_ctx: int, options: EngineOptions) -> Any:
    """llama.cpp's parameters of a context of `n_ctx` tokens."""
    params = llama_cpp.llama_context_default_params()
    params.n_ctx = n_ctx
    params.n_threads = params.n_threads_batch = options.n_threads or physical_cores()
    params.n_seq_max = 1
    params.no_perf = True
    # None keeps llama.cpp's own "auto". Which is faster on a CPU depends on the
    # CPU: on an AMD EPYC flash attention won everywhere (decode +18%), on an
    # Intel VM with AMX it lost badly at depth (20 vs 48 tok/s); the setting
    # lets a user pick.
    if options.flash_attn is not None:
        params.flash_attn_type = (
            llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if options.flash_attn else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
    return params


class LlamaEngine(Capabilities):
    """A GGUF model loaded in this process. Not thread-safe: one stream at a time."""

    can_stream = True
    supports_grammar = True
    supports_scoring = True
    supports_state_saving = True
    supports_chat_template = True
    supports_tools = True  # in its chat template's own format, under a lazy grammar (engine/tool_grammar.py)

    # llama.cpp's objects are ctypes pointers and structures (typed Any here).
    context_size: int
    _model: Any
    _context: Any
    _vocab: Any
    _memory: Any
    _n_batch: int
    _seed: int | None
    _kv_tokens: list[int]
    _one_token: Any
    _one_batch: Any
    _piece: Any
    _state_cache: PrefixStateCache | None

    def __init__(
        self, model: ResolvedModel, options: EngineOptions, on_model_loaded: Callable[[LlamaEngine], None] | None = None
    ) -> None:
        """Load `model`. With `on_model_loaded`, the engine is handed to it as soon
        as the model file is loaded, before its llama.cpp context exists (making
        one takes ~40 ms for 4,096 tokens): tokenizing and templating work from
        then on, so a caller on another thread can prepare its prompt meanwhile,
        and whatever needs the context waits for it (and raises its error if it
        could not be made). Without, the engine is complete on return."""
        if model.path is None:
            raise ModelError(f"'{model.reference}' is not a local model file")
        self.model_name = Path(model.path).name
        self._path = Path(model.path)
        # The model file's size, to guess its speed from (jobs/pacing.py).
        self.model_bytes = self._path.stat().st_size if self._path.is_file() else None
        self.last_stats = GenerationStats()
        self._model = self._context = None
        self._chat_template: str | None = None
        # llama.cpp's own work only (model mmap + context), as llama-cli reports it:
        # chatllm's set-up around it counts as overhead, not as load.
        self.load_s = 0.0
        # time.perf_counter() when the engine could first generate (see Meter).
        self.ready_at: float | None = None
        self._context_made = threading.Event()
        self._context_error: BaseException | None = None
        path = Path(model.path)
        handed_over = False
        try:
            params = self._load_model(path, options)
            if on_model_loaded is not None:
                on_model_loaded(self)
                handed_over = True
            self._make_context(path, params, options)
        except BaseException as error:
            self._context_error = error
            if not handed_over:
                self._free()
            # Otherwise the model stays until close(): the new owner may be
            # tokenizing with it right now.
            raise
        finally:
            self._context_made.set()
        self.last_stats.timings.load_s = self.load_s

    # ---- loading -------------------------------------------------------------

    def _load_model(self, path: Path, options: EngineOptions) -> Any:
        """Load the model file; returns the parameters of the context to make."""
        global _backend_ready
        _configure_logging(options.verbose)
        model_params = llama_cpp.llama_model_default_params()
        layers = options.n_gpu_layers
        if layers is None:  # --gpu-layers auto; a CPU-only build need not read the GGUF header for sizes
            layers = _auto_gpu_layers(path, options.n_ctx) if llama_cpp.llama_supports_gpu_offload() else 0
        # llama.cpp reads any count above the layer count as "all layers".
        model_params.n_gpu_layers = 0x7FFFFFFF if layers < 0 else layers
        model_params.use_extra_bufts = weight_repacking_enabled(options.weight_repack)
        with _quiet_native_work(options.verbose):
            if not _backend_ready:
                llama_cpp.llama_backend_init()
                _backend_ready = True
            started = time.perf_counter()
            self._model = llama_cpp.llama_model_load_from_file(os.fsencode(path), model_params)
            self.load_s += time.perf_counter() - started
        if not self._model:
            self._model = None
            raise ModelError(f"cannot load '{self.model_name}': the file is truncated or not a valid GGUF model")
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)

        trained = llama_cpp.llama_model_n_ctx_train(self._model)
        n_ctx = options.n_ctx
        if n_ctx is None:
            n_ctx = min(trained, DEFAULT_MAX_CONTEXT) if trained > 0 else DEFAULT_MAX_CONTEXT
        elif n_ctx <= 0 or (trained > 0 and n_ctx > trained):
            self._free()
            if n_ctx <= 0:
                raise UsageError(f"--ctx must be a positive number of tokens, not {n_ctx}")
            raise UsageError(
                f"'{self.model_name}' supports at most {trained} tokens of context; --ctx {n_ctx} is too large"
            )

        params = _context_params(n_ctx, options)
        # What was asked for: llama.cpp may round the context up (to 256), and
        # known before the context exists, this is what budgets are made from.
        self.context_size = n_ctx
        return params

    def _make_context(self, path: Path, params: Any, options: EngineOptions) -> None:
        with _quiet_native_work(options.verbose):
            started = time.perf_counter()
            self._context = llama_cpp.llama_init_from_model(self._model, params)
            self.load_s += time.perf_counter() - started
        if not self._context:
            self._context = None
            raise EngineError(
                f"cannot create a {params.n_ctx}-token context for '{self.model_name}' (out of memory?); try a smaller --ctx"
            )
        self._n_batch = llama_cpp.llama_n_batch(self._context)
        self._memory = llama_cpp.llama_get_memory(self._context)
        self._seed = options.seed
        # Tokens whose keys and values are in the KV cache, in position order.
        self._kv_tokens: list[int] = []
        # One reusable single-token batch: the decode loop allocates nothing.
        self._one_token = (llama_cpp.llama_token * 1)()
        self._one_batch = llama_cpp.llama_batch_get_one(self._one_token, 1)
        self._piece = ctypes.create_string_buffer(PIECE_BUFFER)
        # Imported only now (hashlib is ~10 ms of Python): when the model loads on
        # a background thread, llama.cpp starts without waiting for it.
        from chatllm.engine.state_cache import PrefixStateCache, model_identity

        self._state_cache = None
        if options.state_cache_dir is not None:
            # A state file records the context's KV streams (one per sequence
            # for `serve --parallel`) and loads only into as many.
            streams = 1 if params.kv_unified else params.n_seq_max
            layout = f"\0streams={streams}" if streams > 1 else ""

            # Hashing the model file's ends waits until a prefix is actually looked up.
            def identity() -> str:
                kv = f"fa={params.flash_attn_type}\0k={params.type_k}\0v={params.type_v}{layout}"
                return f"{model_identity(path)}\0{kv}"

            self._state_cache = PrefixStateCache(Path(options.state_cache_dir), options.state_cache_max_bytes, identity)
        self.ready_at = time.perf_counter()

    @functools.cached_property
    def identity(self) -> str | None:
        """The model file's fingerprint (size, mtime, hashes of its ends)."""
        from chatllm.engine.state_cache import model_identity

        try:
            return model_identity(self._path)
        except OSError:
            return None

    @functools.cached_property
    def _prompt(self) -> ChatPrompt:
        """The tokenizer and chat template, made on first use: on the thread that
        prepares a prompt, not on the one loading the model (Jinja2 compiles the
        template in ~3 ms)."""
        from chatllm.engine.chat_prompt import ChatPrompt

        return ChatPrompt(self._model, self._vocab, self.model_name, self._chat_template)

    def use_chat_template(self, template: str) -> None:
        """Render prompts with `template` (Jinja text) instead of the GGUF's own."""
        self._chat_template = template
        self.__dict__.pop("_prompt", None)  # made again, with it, on next use

    @property
    def has_chat_template(self) -> bool:
        """Whether the GGUF carries a chat template of its own."""
        self._require_model()
        return self._prompt.has_own_template

    def _require_model(self) -> None:
        """Raise why the engine cannot be used: its context could not be made, or
        it was closed (its model is freed: tokenizing would read freed memory)."""
        if self._context_error is not None:
            raise self._context_error
        if self._model is None:
            raise EngineError("the model has been closed")

    def _wait_for_context(self) -> None:
        """Wait until the context is made; raise why it could not be, or that the
        engine was closed."""
        self._context_made.wait()
        if self._context_error is not None:
            raise self._context_error
        if self._context is None:
            raise EngineError("the model has been closed")

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` as plain text: no BOS, special-token markup not parsed."""
        self._require_model()
        return self._prompt.count_tokens(text)

    def count_prompt_tokens(self, messages: Sequence[Message]) -> int:
        """Exactly the number of tokens `stream(messages, ...)` evaluates as its prompt."""
        self._require_model()
        return len(self._prompt.prompt_tokens(messages))

    def prompt_tokens(self, messages: Sequence[Message], think: bool | None = None) -> list[int]:
        """The templated prompt, ending with the opening of the assistant's turn."""
        self._require_model()
        return self._prompt.prompt_tokens(messages, think)

    @property
    def thinking_switch(self) -> bool:
        """Whether the model's chat template can turn thinking on and off."""
        self._require_model()
        return self._prompt.thinking_switch

    # ---- generation ----------------------------------------------------------

    def stream(self, messages: Sequence[Message], params: GenerationParams) -> EngineStream:
        """Yield the reply in pieces of valid UTF-8 text. Raises EngineError (on the
        first `next`) if the prompt does not fit the context."""
        self._require_model()
        stats = GenerationStats(timings=Timings(load_s=self.load_s))
        self.last_stats = stats
        started = time.perf_counter()
        calls = ToolCalls.of(params, self._prompt)
        prompt, thinking = self._checked_prompt(messages, params, stats)
        self._wait_for_context()
        started = max(started, self.ready_at or started)
        stats.timings.load_s = self.load_s
        sampler = ReplySampler(self._vocab, self._context, params, prompt, self.context_size, self._seed, calls)
        first_piece = True
        try:
            cached, evaluated, prefill_s = self._evaluate_prompt(messages, prompt, params)
            stats.usage.cached_prompt_tokens = cached
            # A fully cached prompt still re-evaluates its last token (for logits):
            # that is no prefill worth a rate.
            if evaluated > 1 or (evaluated == 1 and cached == 0):
                stats.timings.prefill_tokens_per_s = evaluated / prefill_s if prefill_s > 0 else 0.0
            if sampler.constrained is not None:
                draw = sampler.constrained.sample
            else:
                draw = functools.partial(llama_cpp.llama_sampler_sample, sampler.chain, self._context, -1)
            pieces = self._generate(draw, params, stats, thinking)
            pieces = calls.events(pieces, stats) if calls else pieces
            try:
                for piece in pieces:
                    if first_piece:
                        stats.timings.ttft_s = time.perf_counter() - started
                        first_piece = False
                    yield piece
            finally:
                pieces.close()  # runs its bookkeeping now, before the sampler is freed
        except (GeneratorExit, KeyboardInterrupt):
            stats.finish_reason = "interrupted"
            raise
        finally:
            sampler.close()
            self._repair_kv()
            stats.timings.total_s = time.perf_counter() - started
            if first_piece:
                stats.timings.ttft_s = stats.timings.total_s

    def _checked_prompt(
        self, messages: Sequence[Message], params: GenerationParams, stats: GenerationStats
    ) -> tuple[list[int], Thinking | None]:
        """The prompt's tokens, and the thinking state of a reply that may
        think; EngineError for a prompt that cannot be answered."""
        prompt = self._prompt.prompt_tokens(messages, params.think, params)
        stats.usage.prompt_tokens = len(prompt)
        # Thinking comes out as Reasoning pieces; a reply under a JSON Schema is all answer.
        thinking = None
        if self._prompt.may_think and not params.json_schema:
            thinking = Thinking(
                ThinkSplitter(self._prompt.opens_thinking),
                params.reasoning_budget,
                stats,
                self._prompt.tokenize(FORCED_CLOSE, special=True),
            )
        if not prompt:
            raise EngineError(f"the chat template of '{self.model_name}' produced an empty prompt")
        if len(prompt) >= self.context_size:
            raise EngineError(
                f"the prompt takes {len(prompt)} tokens but the context holds {self.context_size}; shorten the input or raise --ctx"
            )
        return prompt, thinking

    def _evaluate_prompt(
        self, messages: Sequence[Message], prompt: list[int], params: GenerationParams | None = None
    ) -> tuple[int, int, float]:
        """Bring the KV cache to exactly `prompt`, reusing what is already there and
        a saved prefix state. Returns (tokens reused, tokens evaluated, seconds)."""
        keep = 0
        limit = min(len(self._kv_tokens), len(prompt) - 1)  # the last prompt token is always evaluated, for its logits
        while keep < limit and self._kv_tokens[keep] == prompt[keep]:
            keep += 1
        self._truncate_kv(keep)
        cache = self._state_cache
        prefix = self._prompt.system_prefix_length(messages, prompt, params) if cache is not None else 0
        save_prefix = False
        if cache is not None and prefix > keep:
            if cache.has(prompt[:prefix]):
                self._clear_kv()
                if cache.load(self._context, prompt[:prefix]):
                    self._kv_tokens += prompt[:prefix]
                else:
                    self._clear_kv()  # a failed load may have left part of the state
            save_prefix = len(self._kv_tokens) < prefix
        cached = len(self._kv_tokens)
        seconds = 0.0
        if cache is not None and save_prefix:
            seconds += self._decode_prompt(prompt[cached:prefix])
            cache.save(self._context, prompt[:prefix])
        seconds += self._decode_prompt(prompt[len(self._kv_tokens) :])
        return cached, len(prompt) - cached, seconds

    def _decode_prompt(self, tokens: list[int]) -> float:
        """Evaluate `tokens` after the cached ones in batches of n_batch; returns the
        seconds spent inside llama.cpp."""
        seconds = 0.0
        for start in range(0, len(tokens), self._n_batch):
            chunk = tokens[start : start + self._n_batch]
            array = (llama_cpp.llama_token * len(chunk))(*chunk)
            began = time.perf_counter()
            result = llama_cpp.llama_decode(self._context, llama_cpp.llama_batch_get_one(array, len(chunk)))
            llama_cpp.llama_synchronize(self._context)  # a GPU backend may still be running
            seconds += time.perf_counter() - began
            if result != 0:
                raise EngineError(f"llama.cpp failed to evaluate the prompt (llama_decode returned {result})")
            self._kv_tokens += chunk
        return seconds

    def _generate(
        self, draw: Callable[[], int], params: GenerationParams, stats: GenerationStats, thinking: Thinking | None
    ) -> EngineStream:
        """The decode loop. Everything between two `llama_decode` calls is kept to
        a few C calls and a UTF-8 decoder step (and, for a model that thinks,
        splitting its thinking from its answer)."""
        context, vocab, piece, kv = self._context, self._vocab, self._piece, self._kv_tokens
        one_token, one_batch = self._one_token, self._one_batch
        decode, is_eog, to_piece = llama_cpp.llama_decode, llama_cpp.llama_vocab_is_eog, llama_cpp.llama_token_to_piece
        clock = time.perf_counter
        utf8 = codecs.getincrementaldecoder("utf-8")("replace")
        stops, limit, usage = tuple(s for s in params.stop if s), params.max_tokens, stats.usage
        held = ""  # text that may be the start of a stop string
        decode_s, steps, hit = 0.0, 0, False
        finish: FinishReason = "stop"
        if limit is not None and limit <= 0:
            stats.finish_reason = "length"
            return
        token = draw()
        try:
            while not is_eog(vocab, token):
                usage.completion_tokens += 1
                length = to_piece(vocab, token, piece, PIECE_BUFFER, 0, False)
                text = utf8.decode(piece.raw[:length]) if length > 0 else ""
                if stops:
                    text, held, hit = split_at_stop(held + text, stops)
                if thinking is not None:
                    yield from thinking.feed(text)
                elif text:
                    yield text
                if hit:
                    break
                if limit is not None and usage.completion_tokens >= limit or len(kv) >= self.context_size:
                    finish = "length"
                    break
                if self._context is None:  # closed while this iterator was suspended
                    raise EngineError("the model was closed during generation")
                one_token[0] = token
                began = clock()
                result = decode(context, one_batch)
                if result != 0:
                    raise EngineError(f"llama.cpp failed to generate (llama_decode returned {result})")
                kv.append(token)
                if thinking is not None and thinking.over_budget():
                    yield from self._end_thinking(thinking, utf8)
                token = draw()
                decode_s += clock() - began
                steps += 1
            # Held text that only looked like the start of a stop string is part of
            # the reply after all. Bytes of a character cut off by the token limit
            # are dropped rather than shown as U+FFFD.
            if held and not hit:
                yield from thinking.feed(held) if thinking is not None else (held,)
            if thinking is not None:
                yield from thinking.finish()
            stats.finish_reason = finish
        finally:
            stats.timings.decode_tokens_per_s = steps / decode_s if steps and decode_s > 0 else 0.0

    def _end_thinking(self, thinking: Thinking, utf8: codecs.IncrementalDecoder) -> EngineStream:
        """End the thinking as llama-server's --reasoning-budget does: the
        closing tag, as if the model had written it."""
        for forced in thinking.close_tokens:
            self._one_token[0] = forced
            if llama_cpp.llama_decode(self._context, self._one_batch) != 0:
                raise EngineError("llama.cpp failed to generate (llama_decode returned an error)")
            self._kv_tokens.append(forced)
            thinking.stats.usage.completion_tokens += 1
            length = llama_cpp.llama_token_to_piece(self._vocab, forced, self._piece, PIECE_BUFFER, 0, True)
            yield from thinking.feed(utf8.decode(self._piece.raw[:length]) if length > 0 else "", forced=True)

    # ---- scoring -------------------------------------------------------------

    def score(self, messages: Sequence[Message], continuations: Sequence[str]) -> list[float]:
        """The log-probability of each continuation as the whole reply to
        `messages` (its tokens, then the end of the turn), by the model's own
        logits. The prompt is evaluated once (and reuses the KV cache like any
        reply); each continuation costs its own few tokens."""
        import numpy  # only here: scoring is for classify, and numpy is ~50 ms to import

        self._require_model()
        prompt, scored = self._scoring_tokens(messages, continuations)
        self._wait_for_context()
        n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)

        def log_softmax() -> numpy.ndarray:
            logits = numpy.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self._context, -1), shape=(n_vocab,))
            shifted = logits - logits.max()
            return shifted - numpy.log(numpy.exp(shifted).sum())

        stats = GenerationStats(timings=Timings(load_s=self.load_s))
        self.last_stats = stats
        started = time.perf_counter()
        try:
            cached, evaluated, prefill_s = self._evaluate_prompt(messages, prompt)
            stats.usage.prompt_tokens, stats.usage.cached_prompt_tokens = len(prompt), cached
            if evaluated > 1 and prefill_s > 0:
                stats.timings.prefill_tokens_per_s = evaluated / prefill_s
            first = log_softmax()
            scores = []
            for tokens in scored:
                total = float(first[tokens[0]])
                for previous, token in zip(tokens, tokens[1:]):
                    self._decode_prompt([previous])
                    total += float(log_softmax()[token])
                self._truncate_kv(len(prompt))
                scores.append(total)
            return scores
        finally:
            self._repair_kv()
            stats.timings.total_s = stats.timings.ttft_s = time.perf_counter() - started

    def _scoring_tokens(
        self, messages: Sequence[Message], continuations: Sequence[str]
    ) -> tuple[list[int], list[list[int]]]:
        """The prompt of a scoring, and each continuation's tokens as the whole
        reply: its text, then the end of the turn."""
        prompt = self._prompt.prompt_tokens(messages, think=False)  # a label needs no deliberation
        # A template that opens <think> anyway: each continuation first closes it
        # (the same tokens for every label, so the ranking is the labels' own).
        opening = self._prompt.tokenize(FORCED_CLOSE.lstrip("\n"), special=True) if self._prompt.opens_thinking else []
        if len(prompt) + max((self.count_tokens(c) for c in continuations), default=0) + 2 >= self.context_size:
            raise EngineError(
                f"the prompt and its labels do not fit in the {self.context_size}-token context; shorten the input or raise --ctx"
            )
        end = llama_cpp.llama_vocab_eot(self._vocab)
        if end < 0:
            end = llama_cpp.llama_vocab_eos(self._vocab)
        return prompt, [[*opening, *self._prompt.tokenize(text, special=False), end] for text in continuations]

    # ---- KV bookkeeping ------------------------------------------------------

    def _truncate_kv(self, keep: int) -> None:
        """Make the KV cache hold exactly the first `keep` tokens of `_kv_tokens`."""
        if keep > 0 and llama_cpp.llama_memory_seq_rm(self._memory, 0, keep, -1):
            del self._kv_tokens[keep:]
        else:  # some memory types (recurrent models) cannot drop a suffix: start over
            self._clear_kv()

    def _clear_kv(self) -> None:
        llama_cpp.llama_memory_clear(self._memory, True)
        self._kv_tokens.clear()

    def _repair_kv(self) -> None:
        """After an exception (e.g. Ctrl-C between llama_decode and our bookkeeping)
        make `_kv_tokens` and the KV cache agree again."""
        if self._context is not None:
            in_cache = llama_cpp.llama_memory_seq_pos_max(self._memory, 0) + 1
            if in_cache != len(self._kv_tokens):
                self._truncate_kv(min(in_cache, len(self._kv_tokens)))

    def close(self) -> None:
        """Free the context and the model, once the context is made if it is being
        made. Safe to call twice."""
        self._context_made.wait()
        self._free()

    def _free(self) -> None:
        if self._context is not None:
            llama_cpp.llama_free(self._context)
            self._context = None
        if self._model is not None:
            llama_cpp.llama_model_free(self._model)
            self._model = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown may have torn llama_cpp down already
            pass
