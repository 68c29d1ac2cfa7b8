"""A new user's first hour, scripted: only the commands and API that README.md and
docs/guide.md document, in a fresh directory.

``sim init`` -> edit the config and scenario to two custom models of two providers ->
``sim synth`` a small trace -> ``sim replay`` it -> ``optimize run`` a small study ->
``sim serve`` the edited scenario on port 0 -> ``optimize export --endpoints`` pointing
the models at the twin -> ``Router.from_config`` on the export, routing 20 tasks
(tagged with ``twin_tag``, as the guide says, so the twin knows each task's type).
The commands run through the CLIs' entry points (``sim.cli.main`` and
``optimize.cli.main``, what ``.venv/bin/sim`` and ``.venv/bin/optimize`` call) in this
process with the user's argv, and the twin as a real ``.venv/bin/sim serve``
subprocess started first: on a loaded 2-core machine each subprocess's start-up
costs seconds.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's bin/, where `sim` and `optimize` live
MODELS = ("acme-fast", "bolt-pro")


class Cli:
    """``sim ...`` / ``optimize ...`` through their entry points, in the test's cwd."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
        self.monkeypatch, self.capsys = monkeypatch, capsys

    def __call__(self, *argv: str) -> tuple[str, str]:
        """Run one command; it must exit 0. Returns its (stdout, stderr)."""
        from optimize.cli import main as optimize_main
        from sim.cli import main as sim_main

        self.capsys.readouterr()
        self.monkeypatch.setattr(sys, "argv", list(argv))
        code = 0
        try:
            {"sim": sim_main, "optimize": optimize_main}[argv[0]]()
        except SystemExit as exc:
            code = int(exc.code or 0)
        out, err = self.capsys.readouterr()
        assert code == 0, f"{' '.join(argv)}: exit {code}: {err}"
        return out, err


def edit_config(path: Path) -> None:
    """The user's edit: the catalog replaced by two models, every route through them."""
    cfg = yaml.safe_load(path.read_text())
    cfg["models"] = [
        {"id": "acme-fast", "provider": "acme", "completion_rate": 0.8, "cost_per_task": 0.001,
         "avg_latency_ms": 1500, "status": "stable"},
        {"id": "bolt-pro", "provider": "bolt", "completion_rate": 0.9, "cost_per_task": 0.01,
         "avg_latency_ms": 3000, "status": "stable"},
    ]  # fmt: skip
    for route in cfg["routes"].values():
        route["chain"] = list(MODELS)
    cfg["budget"].pop("per_model_usd", None)
    cfg["budget"].pop("per_provider_usd", None)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))


def edit_scenario(path: Path) -> None:
    """The same two models in the simulated world, at the config's prices."""
    scn = yaml.safe_load(path.read_text())
    scn["providers"] = {
        "acme": {
            "outage": {
                "time_between": {"dist": "exponential", "mean_s": 3600},
                "duration": {"dist": "lognormal", "median_s": 60, "p90_s": 300},
            }
        }
    }
    common = {"fail_fast_latency_s": 0.3, "malformed_rate": 0.02, "server_error_rate": 0.01}
    scn["models"] = {
        "acme-fast": {"provider": "acme", "completion": {"default": 0.8},
                      "latency": {"median_s": 1.5, "p95_s": 3.0}, "outage": {"shared": True},
                      "capacity": 32, "cost_per_task": 0.001, **common},
        "bolt-pro": {"provider": "bolt", "completion": {"default": 0.9},
                     "latency": {"median_s": 3.0, "p95_s": 6.0}, "capacity": 32,
                     "cost_per_task": 0.01, **common},
    }  # fmt: skip
    path.write_text(yaml.safe_dump(scn, sort_keys=False))


def test_the_first_hour(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    run = Cli(monkeypatch, capsys)
    run("sim", "init", "mydir/")
    edit_config(tmp_path / "mydir" / "router.yaml")
    edit_scenario(tmp_path / "mydir" / "scenario.yaml")
    pair = ("--config", "mydir/router.yaml", "--scenario", "mydir/scenario.yaml")

    # The twin of the edited scenario, started first (it loads while the rest runs);
    # its first stdout line is its base URL.
    twin = subprocess.Popen(
        [str(BIN / "sim"), "serve", "--scenario", "mydir/scenario.yaml", "--port", "0",
         "--time-scale", "0.01", "--quiet"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        run("sim", "synth", "mine/day.parquet", "--tasks", "200", "--rate", "0.5", "--seed", "1")
        out, err = run("sim", "replay", "mine/", *pair, "--json")
        summary = json.loads(out)
        assert summary["tasks"] == 200 and summary["completion_rate"] > 0.75
        assert set(summary["per_model"]) == set(MODELS)
        assert "warning" not in err  # the two files agree on prices

        out, _ = run("optimize", "run", "mine/", *pair, "--study", "mine", "--trials", "4",
                     "--replications", "1", "--holdout-replications", "2", "--json")  # fmt: skip
        assert json.loads(out)["complete"] == 4

        assert twin.stdout is not None
        url = twin.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1"), (url, twin.poll())
        endpoints = {m: {"base_url": url, "model": m} for m in MODELS}
        (tmp_path / "endpoints.yaml").write_text(yaml.safe_dump(endpoints))
        # --force: a 4-trial study on 200 tasks rarely beats the base significantly;
        # the README's --force writes the winner with the reason as a header comment.
        run("optimize", "export", "--study", "mine", "--out", "tuned.yaml",
            "--endpoints", "endpoints.yaml", "--force")  # fmt: skip
        results = asyncio.run(_route_20(tmp_path / "tuned.yaml"))
    finally:
        twin.terminate()
        twin.communicate(timeout=30)

    ok = [r for r in results if r.success]
    assert len(ok) >= 15, [(r.error, r.reasons()) for r in results if not r.success]
    assert {r.model for r in ok} <= set(MODELS)
    assert sum(r.cost_usd for r in results) > 0


async def _route_20(config: Path) -> list:  # noqa: ANN401
    from router import Task
    from router.live import Router
    from sim.twin import twin_tag

    types = ("json", "regex", "sql", "bug_patch")
    cwd = os.getcwd()
    async with Router.from_config(str(config)) as router:
        tasks = [
            router.route(
                Task(f"t{i}", types[i % 4], payload=f"{twin_tag(i, types[i % 4], 500, 100)} do it")
            )
            for i in range(20)
        ]
        results = await asyncio.gather(*tasks)
    assert os.getcwd() == cwd
    return list(results)
