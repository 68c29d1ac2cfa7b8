"""The simulated world: what the providers are and how they behave.

- :mod:`sim.world.scenario`: the scenario file (models, providers, completion, latency,
  outages, capacity, rate limits, difficulty) and its validation;
- :mod:`sim.world.distributions`: the latency families a scenario can name;
- :mod:`sim.world.providers`: :class:`World`, a scenario realised for one seed (common
  random numbers per task, model and attempt; outage timelines);
- :mod:`sim.world.site`: :class:`ProviderSite`, the four steps of a call (rate limit,
  outage, capacity, answer), shared by the simulator and the HTTP twin;
- :mod:`sim.world.calibration` / :mod:`sim.world.calibration_report`: a scenario fitted
  from recorded attempts (``sim calibrate``);
- :mod:`sim.world.validation`: the fitted scenario checked out of sample
  (``sim validate``);
- :mod:`sim.world.consistency`: a router config checked against a scenario.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from router._lazy import lazy_exports

if TYPE_CHECKING:
    from sim.world.calibration import (
        Calibration,
        Records,
        calibrate,
        load_records,
        write_calibration,
    )
    from sim.world.consistency import (
        missing_models,
        price_warning,
    )
    from sim.world.providers import (
        OutageTimeline,
        World,
    )
    from sim.world.scenario import (
        DifficultySpec,
        ModelSpec,
        OutageSpec,
        Scenario,
        TokenLatency,
        load_scenario,
        load_seed_scenario,
        parse_scenario,
        scenario_json_schema,
    )
    from sim.world.site import (
        RATE_LIMIT_LATENCY_S,
        ProviderSite,
    )
    from sim.world.validation import (
        ValidationReport,
        validate,
    )

_EXPORTS = {
    "Calibration": "sim.world.calibration",
    "Records": "sim.world.calibration",
    "calibrate": "sim.world.calibration",
    "load_records": "sim.world.calibration",
    "write_calibration": "sim.world.calibration",
    "missing_models": "sim.world.consistency",
    "price_warning": "sim.world.consistency",
    "OutageTimeline": "sim.world.providers",
    "World": "sim.world.providers",
    "DifficultySpec": "sim.world.scenario",
    "ModelSpec": "sim.world.scenario",
    "OutageSpec": "sim.world.scenario",
    "Scenario": "sim.world.scenario",
    "TokenLatency": "sim.world.scenario",
    "load_scenario": "sim.world.scenario",
    "load_seed_scenario": "sim.world.scenario",
    "parse_scenario": "sim.world.scenario",
    "scenario_json_schema": "sim.world.scenario",
    "ProviderSite": "sim.world.site",
    "RATE_LIMIT_LATENCY_S": "sim.world.site",
    "ValidationReport": "sim.world.validation",
    "validate": "sim.world.validation",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "Calibration",
    "DifficultySpec",
    "ModelSpec",
    "OutageSpec",
    "OutageTimeline",
    "ProviderSite",
    "RATE_LIMIT_LATENCY_S",
    "Records",
    "Scenario",
    "TokenLatency",
    "ValidationReport",
    "World",
    "calibrate",
    "load_records",
    "load_scenario",
    "load_seed_scenario",
    "missing_models",
    "parse_scenario",
    "price_warning",
    "scenario_json_schema",
    "validate",
    "write_calibration",
]
