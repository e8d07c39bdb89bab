"""Prometheus metrics of ``glimp serve``, in a registry of their own (one per app, so tests and several apps
in one process never collide on the global registry)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from glimp_llm.trace import RoutedResult

ENTROPY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "glimp_requests", "HTTP requests answered", ["endpoint", "status"], registry=self.registry
        )
        self.in_flight = Gauge("glimp_requests_in_flight", "routed requests being served", registry=self.registry)
        self.steps = Counter("glimp_steps", "reasoning steps written, by model", ["model"], registry=self.registry)
        self.tokens = Counter("glimp_tokens", "completion tokens written, by model", ["model"], registry=self.registry)
        self.entropy = Histogram(
            "glimp_step_entropy_nats", "glimpse entropy at step starts", buckets=ENTROPY_BUCKETS, registry=self.registry
        )
        self.latency = Histogram(
            "glimp_request_latency_seconds",
            "wall time of routed requests",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def observe_result(self, endpoint: str, result: RoutedResult) -> None:
        for step in result.steps:
            self.steps.labels(step.model).inc()
            if step.entropy is not None:
                self.entropy.observe(step.entropy)
        self.tokens.labels("small").inc(result.usage.small_tokens)
        self.tokens.labels("large").inc(result.usage.large_tokens)
        self.latency.labels(endpoint).observe(result.timings.wall_seconds)
