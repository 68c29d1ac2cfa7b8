"""The twin over HTTP: a scenario served to live clients.

- :mod:`sim.twin.server`: :class:`TwinServer` (``sim serve``), the scenario's models
  behind an OpenAI-compatible endpoint, making the simulator's own draws
  (:class:`sim.world.ProviderSite`) in scaled wall time;
- :mod:`sim.twin.fidelity`: the live router against the twin vs the simulator on the
  same trace (``bench/fidelity.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from router._lazy import lazy_exports

if TYPE_CHECKING:
    from sim.twin.fidelity import (
        FidelityReport,
        run_fidelity,
        twin_config,
    )
    from sim.twin.server import (
        TwinRequest,
        TwinServer,
        answer_text,
        twin_tag,
    )

_EXPORTS = {
    "FidelityReport": "sim.twin.fidelity",
    "run_fidelity": "sim.twin.fidelity",
    "twin_config": "sim.twin.fidelity",
    "TwinRequest": "sim.twin.server",
    "TwinServer": "sim.twin.server",
    "answer_text": "sim.twin.server",
    "twin_tag": "sim.twin.server",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "FidelityReport",
    "TwinRequest",
    "TwinServer",
    "answer_text",
    "run_fidelity",
    "twin_config",
    "twin_tag",
]
