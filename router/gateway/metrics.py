"""The gateway's Prometheus metrics, in a registry of its own.

Counted per request (cheap: label children are cached, so the hot path does a dict
lookup and an increment): requests and attempts by route, model and outcome kind,
request latency and time to first token. Read from the policy at scrape time (so
they cost nothing per request): spend (all time and today), budget remaining per
cap, breaker state and seconds to re-admission per model, budget alerts.

No label or sample carries a payload, a header or a key: labels are route names,
model ids, outcome kinds and cap names from the config.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from router.breaker import BreakerState
from router.ledger import BudgetAlert
from router.policy import RoutingPolicy
from router.result import TaskResult

__all__ = ["GatewayMetrics"]

#: Breaker states as numbers (a gauge): 0 closed, 1 half-open, 2 open.
BREAKER_VALUES = {BreakerState.CLOSED: 0.0, BreakerState.HALF_OPEN: 1.0, BreakerState.OPEN: 2.0}

# Agents' calls last from a fraction of a second to minutes.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class _PolicyState(Collector):
    """Spend, budget and breaker figures read from the policy when scraped."""

    def __init__(self, policy: Callable[[], RoutingPolicy], clock: Callable[[], float]) -> None:
        self._policy = policy
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        policy = self._policy()
        ledger = policy.ledger
        now = self._clock()
        spent = CounterMetricFamily(
            "costroute_spend_usd", "USD spent by routed calls since the gateway started"
        )
        spent.add_metric([], ledger.all_time_usd)
        yield spent
        today = GaugeMetricFamily(
            "costroute_spend_today_usd",
            "USD spent today (the ledger's day), by model",
            labels=["model"],
        )
        for mid, value in zip(ledger.model_ids, ledger.spent_model, strict=True):
            if mid in policy.model_index:
                today.add_metric([mid], value)
        yield today
        reserved = GaugeMetricFamily(
            "costroute_budget_reserved_usd", "USD held by calls in flight (estimates)"
        )
        reserved.add_metric([], ledger.reserved_total)
        yield reserved
        remaining = GaugeMetricFamily(
            "costroute_budget_remaining_usd",
            "USD left today under each daily cap (cap minus spend; in-flight holds not deducted)",
            labels=["scope", "key"],
        )
        if math.isfinite(ledger.cap_total):
            remaining.add_metric(["global", "*"], max(0.0, ledger.cap_total - ledger.spent_total))
        for mid, cap, value in zip(
            ledger.model_ids, ledger.cap_model, ledger.spent_model, strict=True
        ):
            if math.isfinite(cap):
                remaining.add_metric(["model", mid], max(0.0, cap - value))
        for name, cap, value in zip(
            ledger.provider_names, ledger.cap_provider, ledger.spent_provider, strict=True
        ):
            if math.isfinite(cap):
                remaining.add_metric(["provider", name], max(0.0, cap - value))
        yield remaining
        state = GaugeMetricFamily(
            "costroute_breaker_state",
            "Circuit breaker per model: 0 closed, 1 half-open, 2 open",
            labels=["model"],
        )
        until = GaugeMetricFamily(
            "costroute_breaker_open_seconds",
            "Seconds until an open breaker admits a probe (0 when not open)",
            labels=["model"],
        )
        trips = CounterMetricFamily(
            "costroute_breaker_trips", "Times each model's breaker opened", labels=["model"]
        )
        for m in policy.models:
            if m.id not in policy.model_index:
                continue  # removed by a reload
            breaker = policy.breakers[m.index]
            current = breaker.state
            if current is BreakerState.OPEN and now >= breaker.open_until:
                current = BreakerState.HALF_OPEN  # due: the next call will be a probe
            state.add_metric([m.id], BREAKER_VALUES[current])
            left = breaker.open_until - now if current is BreakerState.OPEN else 0.0
            until.add_metric([m.id], max(0.0, left))
            trips.add_metric([m.id], breaker.total_trips)
        yield state
        yield until
        yield trips


class GatewayMetrics:
    """The metrics of one gateway: ``registry`` is its own (never the global one), so
    several gateways in one process (tests) never share or collide."""

    def __init__(self, policy: Callable[[], RoutingPolicy], clock: Callable[[], float]) -> None:
        registry = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "costroute_requests",
            "Requests by route, answering model and outcome (ok, or why not)",
            ["route", "model", "outcome"],
            registry=registry,
        )
        self.attempts = Counter(
            "costroute_attempts",
            "Provider attempts by route, model and outcome kind",
            ["route", "model", "kind"],
            registry=registry,
        )
        self.latency = Histogram(
            "costroute_request_duration_seconds",
            "Time from the request to the end of the response, by route",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.ttft = Histogram(
            "costroute_time_to_first_token_seconds",
            "Time from the request to the first content byte sent to a streaming client",
            ["route"],
            buckets=_TTFT_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "costroute_requests_in_flight", "Routed requests being served", registry=registry
        )
        self.alerts = Counter(
            "costroute_budget_alerts",
            "Budget alerts: spend crossed a fraction of a daily cap",
            ["scope", "key", "fraction"],
            registry=registry,
        )
        self.reloads = Counter(
            "costroute_config_reloads",
            "Config file changes seen, by result (applied or refused)",
            ["result"],
            registry=registry,
        )
        registry.register(_PolicyState(policy, clock))
        self._children: dict[tuple[object, ...], object] = {}

    def _child(self, metric: Counter | Histogram, *labels: str):  # noqa: ANN202
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def request(self, route: str, model: str, outcome: str, latency_s: float) -> None:
        """Count one request (``route``/``model`` ``"-"`` when none applied)."""
        self._child(self.requests, route, model, outcome).inc()
        if route != "-":
            self._child(self.latency, route).observe(latency_s)

    def result(self, result: TaskResult) -> None:
        """Count a routed task's attempts."""
        for attempt in result.attempts:
            self._child(self.attempts, result.route, attempt.model, attempt.kind).inc()

    def first_token(self, route: str, seconds: float) -> None:
        self._child(self.ttft, route).observe(seconds)

    def alert(self, alert: BudgetAlert) -> None:
        self.alerts.labels(alert.scope, alert.key, f"{alert.fraction:g}").inc()

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
