"""Checks that a router config and a scenario describe the same models.

A model's price is written twice: in the router config (what the router *expects*
to pay, used for cost limits, budgets and the routing score) and in the scenario
(what the simulated provider *charges*). They should agree; when they do not, a
replay quietly measures a router that plans with one price and pays another.
:func:`price_mismatches` lists the disagreements, :func:`price_warning` turns
them into the one line ``sim replay`` prints on stderr; :func:`missing_models`
lists config models the scenario cannot simulate (a replay needs them all).
"""

from __future__ import annotations

import math

from router import RouterConfig
from sim.world.scenario import Scenario

__all__ = ["PRICE_FIELDS", "missing_models", "price_mismatches", "price_warning"]

#: The price fields both a model profile and a scenario model carry.
PRICE_FIELDS: tuple[str, ...] = ("cost_per_task", "input_per_mtok", "output_per_mtok")


def missing_models(config: RouterConfig, scenario: Scenario) -> list[str]:
    """Ids of the config's models that the scenario has no model for, in config order."""
    return [m.id for m in config.models if m.id not in scenario.models]


def price_mismatches(
    config: RouterConfig, scenario: Scenario, *, rel_tol: float = 1e-9
) -> list[tuple[str, str, float, float]]:
    """``(model, field, config value, scenario value)`` for every price that differs.

    Only fields set on both sides are compared: a config may leave a price out
    (the router then neither filters nor scores on it), which is not a contradiction.
    Models the scenario lacks are :func:`missing_models`' business, not this one's.
    """
    out: list[tuple[str, str, float, float]] = []
    for profile in config.models:
        spec = scenario.models.get(profile.id)
        if spec is None:
            continue
        for name in PRICE_FIELDS:
            ours, theirs = getattr(profile, name), getattr(spec, name)
            if ours is None or theirs is None:
                continue
            if not math.isclose(ours, theirs, rel_tol=rel_tol, abs_tol=1e-15):
                out.append((profile.id, name, float(ours), float(theirs)))
    return out


def price_warning(
    config: RouterConfig,
    scenario: Scenario,
    *,
    config_name: str = "the config",
    scenario_name: str = "the scenario",
) -> str | None:
    """One line describing the price disagreements, or None when there are none."""
    found = price_mismatches(config, scenario)
    if not found:
        return None
    model, name, ours, theirs = found[0]
    line = (
        f"warning: {model}.{name} is {ours:g} in {config_name} but {theirs:g} in "
        f"{scenario_name}; the simulator charges the scenario's price, the router plans "
        "with the config's"
    )
    if len(found) > 1:
        rest = [f"{m}.{n}" for m, n, _, _ in found[1:]]
        shown = ", ".join(rest[:3]) + (", ..." if len(rest) > 3 else "")
        line += f" [+{len(rest)} more: {shown}]"
    return line
