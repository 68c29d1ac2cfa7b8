"""The routing score and cost per successful task.

The source article ranks models by ``completion_rate / cost_per_task * 1 /
latency``. Two edge cases need a rule:

* **zero cost** (free tiers such as Ring 2.6): the cost is replaced by a floor
  (``scoring.zero_cost_floor_usd``, default $0.000001). The score stays finite;
  a free model outranks a paid one unless the paid one is vastly better, and
  free models rank among themselves by completion / latency. A model with no
  cost figure is treated the same way.
* **unknown latency**: the route's ``max_latency_ms`` stands in, the most
  pessimistic value the route would accept, so an unmeasured model never
  outranks a measured one on speed alone.

Latency is in milliseconds, as in the article.
"""

from __future__ import annotations

import math


def score(
    completion: float | None,
    cost_usd: float | None,
    latency_ms: float | None,
    *,
    zero_cost_floor_usd: float = 1e-6,
    fallback_latency_ms: float = 1.0,
) -> float:
    """``completion / max(cost, floor) * 1 / latency``; 0 when completion is unknown or 0."""
    if not completion:
        return 0.0
    cost = (
        cost_usd if cost_usd is not None and cost_usd > zero_cost_floor_usd else zero_cost_floor_usd
    )
    lat = latency_ms if latency_ms is not None and latency_ms > 0 else fallback_latency_ms
    return completion / cost / lat


def cost_per_success(total_cost_usd: float, successes: int) -> float:
    """Spend divided by completed tasks (``inf`` when nothing completed but money was
    spent, 0 when nothing was spent)."""
    if successes:
        return total_cost_usd / successes
    return math.inf if total_cost_usd > 0 else 0.0
