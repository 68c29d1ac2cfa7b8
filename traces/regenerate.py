"""Regenerate the shipped traces in ``traces/`` with the project's own library code.

Exact command, from the repository root::

    .venv/bin/python traces/regenerate.py

(optionally ``--azure-csv PATH`` if the public data is not at its default place,
``../shared/data/azure-llm-trace-2023/AzureLLMInferenceTrace_code.csv`` beside
the repository). It writes, atomically:

- ``traces/azure_code_2023.parquet``: every row of the Azure LLM inference trace
  (code), converted by :func:`sim.traces.azure.import_azure` with ``seed=0``;
- ``traces/synthetic_2d.parquet``: :func:`sim.traces.synth.synthesize` with
  :data:`SYNTHETIC_PARAMS` (two days, diurnal, 0.25 tasks/s on average);
- ``traces/AzurePublicDataset_LICENSE_CC-BY-4.0.txt``: a copy of the data's licence.

Both outputs are deterministic: running this twice gives identical files (the
test suite checks that the shipped files equal what this code produces).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

import polars as pl

from sim.traces.azure import import_azure
from sim.traces.synth import synthesize
from sim.traces.tasks import write_trace

TRACES_DIR = Path(__file__).resolve().parent
REPO_DIR = TRACES_DIR.parent
AZURE_DATA_DIR = REPO_DIR.parent / "shared" / "data" / "azure-llm-trace-2023"
AZURE_CSV = AZURE_DATA_DIR / "AzureLLMInferenceTrace_code.csv"
AZURE_LICENCE_NAME = "AzurePublicDataset_LICENSE_CC-BY-4.0.txt"

AZURE_OUTPUT = TRACES_DIR / "azure_code_2023.parquet"
SYNTHETIC_OUTPUT = TRACES_DIR / "synthetic_2d.parquet"

#: The Azure import: all rows, task types from the default mix.
AZURE_PARAMS: dict[str, Any] = {"seed": 0, "limit": None, "mix": None}

#: The synthetic trace: two days of diurnal traffic (peak 14:00, peak/trough 3),
#: default mix and Azure-fitted token sizes. Two days at ~1 outage a week per
#: provider lasting ~1 h gives a fair chance of an outage inside the trace.
SYNTHETIC_PARAMS: dict[str, Any] = {
    "duration_s": 2 * 86_400.0,
    "arrival": "diurnal",
    "rate_per_s": 0.25,
    "peak_to_trough": 3.0,
    "peak_hour": 14.0,
    "seed": 0,
}


def build_azure(csv_path: Path = AZURE_CSV) -> pl.DataFrame:
    """The shipped Azure trace, from the public CSV."""
    return import_azure(csv_path, **AZURE_PARAMS)


def build_synthetic() -> pl.DataFrame:
    """The shipped synthetic trace."""
    return synthesize(**SYNTHETIC_PARAMS)


def main(argv: list[str] | None = None) -> int:
    """Write both traces and the licence copy; print what was written."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--azure-csv", type=Path, default=AZURE_CSV)
    args = parser.parse_args(argv)

    azure = build_azure(args.azure_csv)
    write_trace(azure, AZURE_OUTPUT)
    shutil.copyfile(args.azure_csv.parent / AZURE_LICENCE_NAME, TRACES_DIR / AZURE_LICENCE_NAME)
    synthetic = build_synthetic()
    write_trace(synthetic, SYNTHETIC_OUTPUT)
    for path, frame in ((AZURE_OUTPUT, azure), (SYNTHETIC_OUTPUT, synthetic)):
        span = frame.get_column("arrival_s").max()
        print(
            f"{path.relative_to(REPO_DIR)}: {frame.height} tasks over {span:.1f} s, "
            f"{path.stat().st_size} bytes"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
