"""`chatllm serve`'s `GET /metrics`: what an operator watches, in Prometheus
text format, by prometheus-client (imported when the server starts, never
for `--help`).

    chatllm_requests_total{status}              chat completions answered, by HTTP status (503: refused, the
                                                queue full or --max-connections open; 499: the client left first)
    chatllm_requests_in_flight                  being answered or waiting (at most --parallel + --queue)
    chatllm_requests_waiting                    waiting for a free slot
    chatllm_slots, chatllm_slots_busy           slots in all, and generating or evaluating a prompt
    chatllm_prompt_tokens_total                 prompt tokens of finished replies
    chatllm_cached_prompt_tokens_total          of those, served from the cache (a shared prefix, an earlier turn)
    chatllm_generation_tokens_total             tokens generated
    chatllm_time_to_first_token_seconds         histogram, from the request's arrival
    chatllm_time_per_output_token_seconds       histogram, one observation per reply (after its first token)
    chatllm_request_duration_seconds            histogram
    process_resident_memory_bytes, ...          the process (prometheus-client's own collector)

The names follow vLLM's (`vllm:time_to_first_token_seconds`, ...), so existing
dashboards need only the prefix changed.
"""

from __future__ import annotations

from collections.abc import Callable

from chatllm.engine.base import GenerationStats

_TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0)
_TPOT_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.08, 0.15, 0.3, 0.6, 1.2, 2.5)
_DURATION_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0)


class ServeMetrics:
    """The server's metrics; `slot_states` and `waiting` are read at each scrape."""

    def __init__(
        self, slot_states: Callable[[], list[str]], waiting: Callable[[], int], in_flight: Callable[[], int]
    ) -> None:
        import prometheus_client as prometheus  # ~40 ms: serve only, when it starts

        self._prometheus = prometheus
        prometheus.disable_created_metrics()  # no *_created series: nothing here restarts its counters
        self.registry = registry = prometheus.CollectorRegistry()
        prometheus.ProcessCollector(registry=registry)
        self.requests = prometheus.Counter(
            "chatllm_requests", "Chat completion requests answered, by HTTP status", ["status"], registry=registry
        )
        self.prompt_tokens = prometheus.Counter(
            "chatllm_prompt_tokens", "Prompt tokens of finished replies", registry=registry
        )
        self.cached_prompt_tokens = prometheus.Counter(
            "chatllm_cached_prompt_tokens", "Prompt tokens served from the KV cache", registry=registry
        )
        self.generation_tokens = prometheus.Counter("chatllm_generation_tokens", "Tokens generated", registry=registry)
        self.ttft = prometheus.Histogram(
            "chatllm_time_to_first_token_seconds", "Time to the first token", buckets=_TTFT_BUCKETS, registry=registry
        )
        self.tpot = prometheus.Histogram(
            "chatllm_time_per_output_token_seconds",
            "Mean time per generated token after the first, per reply",
            buckets=_TPOT_BUCKETS,
            registry=registry,
        )
        self.duration = prometheus.Histogram(
            "chatllm_request_duration_seconds", "Time to answer a request", buckets=_DURATION_BUCKETS, registry=registry
        )
        prometheus.Gauge(
            "chatllm_requests_in_flight", "Requests being answered or waiting", registry=registry
        ).set_function(in_flight)
        prometheus.Gauge(
            "chatllm_requests_waiting", "Requests waiting for a free slot", registry=registry
        ).set_function(waiting)
        prometheus.Gauge("chatllm_slots", "Slots (--parallel)", registry=registry).set_function(
            lambda: len(slot_states())
        )
        prometheus.Gauge(
            "chatllm_slots_busy", "Slots generating or evaluating a prompt", registry=registry
        ).set_function(lambda: sum(state != "idle" for state in slot_states()))

    def answered(self, status: int) -> None:
        self.requests.labels(status=str(status)).inc()

    def reply(self, stats: GenerationStats) -> None:
        """A reply ended: its tokens and timings."""
        usage, timings = stats.usage, stats.timings
        self.prompt_tokens.inc(usage.prompt_tokens)
        self.cached_prompt_tokens.inc(usage.cached_prompt_tokens)
        self.generation_tokens.inc(usage.completion_tokens)
        if usage.completion_tokens:
            self.ttft.observe(timings.ttft_s)
        if usage.completion_tokens > 1 and timings.total_s > timings.ttft_s:
            self.tpot.observe((timings.total_s - timings.ttft_s) / (usage.completion_tokens - 1))
        self.duration.observe(timings.total_s)

    def text(self) -> tuple[bytes, str]:
        """The exposition and its Content-Type."""
        return self._prometheus.generate_latest(self.registry), self._prometheus.CONTENT_TYPE_LATEST
