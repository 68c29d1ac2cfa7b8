"""The loop the README documents: ``costroute serve --record --record-attempts``, then
``sim calibrate`` on what it recorded, then a scenario the simulator and ``optimize run``
load.

The gateway stands in front of the provider twin serving a known scenario (the hidden
truth of tests/sim/test_calibrate.py, at 10x speed), and the official ``openai`` SDK
sends it coding tasks. Its recordings must be complete -- every call the twin answered is
one attempt record of the same kind -- and ``sim calibrate`` must read them back in
scenario seconds and fit the models that were called.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import openai
import pytest

from router import config_from_dict, load_config
from router.gateway import GatewayServer, GatewaySettings
from sim.twin.fidelity import twin_config
from sim.twin.server import TwinServer
from sim.world.scenario import load_scenario

DATA = Path(__file__).resolve().parents[1] / "data" / "calibration"
TRUTH = DATA / "truth_scenario.yaml"
CONFIG = DATA / "truth_config.yaml"
#: The twin runs 10x faster than scenario time (a gateway hop of ~1 ms wall is then
#: ~10 ms of a scenario answer that takes ~350 ms).
SCALE = 0.1
#: Tasks sent, at 4 a scenario second (50 scenario seconds, 5 s of wall time).
N_TASKS = 200
PROMPTS = {
    "json": "Return the order as a JSON object.",
    "regex": "Write a regex that matches an ISO date.",
    "sql": "Write the SQL query that counts the orders per customer.",
    "error_handling": "Add error handling for ValueError and KeyError around the lookup.",
}
#: What the twin counts as served, by the attempt outcome the gateway records for it
#: (a wrong answer fails the buffered route's validation).
KIND_OF = {"wrong": "validation"}


async def _send(url: str) -> list[str]:
    """Send N_TASKS chat completions at seeded Poisson arrivals; each one's result."""
    rng = np.random.default_rng(0)
    due = np.cumsum(rng.exponential(1 / 4.0, N_TASKS)) * SCALE
    types = rng.choice(sorted(PROMPTS), N_TASKS)
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    start = time.monotonic()

    async def one(i: int) -> str:
        await asyncio.sleep(max(0.0, start + float(due[i]) - time.monotonic()))
        message = {"role": "user", "content": PROMPTS[str(types[i])]}
        try:
            await client.chat.completions.create(model="auto", messages=[message])
        except openai.APIStatusError as exc:
            return f"http_{exc.status_code}"
        return "ok"

    try:
        return list(await asyncio.gather(*(one(i) for i in range(N_TASKS))))
    finally:
        await client.close()


@pytest.mark.realtime  # latencies are read off the wall clock, 10x magnified
def test_the_gateways_recordings_calibrate_a_scenario(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    truth, config = load_scenario(TRUTH), load_config(CONFIG)
    tasks_path, attempts_path = tmp_path / "gw.ndjson", tmp_path / "gw-attempts.ndjson"
    with TwinServer(truth, seed=3, time_scale=SCALE) as twin:
        data = twin_config(config, twin.url, SCALE).model_dump(mode="json")
        for route in data["routes"].values():
            route["buffer"] = True  # validated: a wrong answer is a failed attempt
        settings = GatewaySettings(
            port=0,
            watch=False,
            record=tasks_path,
            record_attempts=attempts_path,
            drain_timeout_s=2.0,
        )
        with GatewayServer(config_from_dict(data), settings) as gw:
            results = asyncio.run(_send(gw.url))
        served = Counter(twin.served)

    # Every request is one task record, and its success is what the client saw.
    tasks = [json.loads(line) for line in tasks_path.read_text().splitlines()]
    assert len(tasks) == N_TASKS
    assert sum(t["success"] for t in tasks) == results.count("ok")
    # Every call the twin answered is one attempt record of that kind: nothing the
    # calibration needs is missing or invented.
    attempts = [json.loads(line) for line in attempts_path.read_text().splitlines()]
    recorded = Counter(a["outcome"] for a in attempts)
    assert recorded == Counter({KIND_OF.get(k, k): n for k, n in served.items()})
    assert {"ok", "validation", "rate_limited"} <= set(recorded)  # the loop saw faults
    called = {a["model"] for a in attempts}

    # sim calibrate reads the gateway's files, in scenario seconds.
    from sim.cli import main

    out = tmp_path / "calibrated.yaml"
    argv = ["sim", "calibrate", str(tasks_path), str(attempts_path), "--out", str(out)]
    argv += ["--config", str(CONFIG), "--time-scale", str(SCALE)]
    monkeypatch.setattr(sys, "argv", argv)
    try:
        main()
    except SystemExit as exc:  # success returns; a failure exits non-zero
        assert exc.code in (0, None), capsys.readouterr().err
    err = capsys.readouterr().err
    assert f"wrote {len(called)} models" in err
    fitted = load_scenario(out)
    assert set(fitted.models) == called
    # The busiest model's latency law is the truth's, in scenario seconds: the median
    # answer takes the truth's median time to first token plus its per-token time for
    # the answers' median length (read in wall seconds, it would be 10x shorter).
    answered = [a for a in attempts if a["model"] == "atlas-mini" and a["outcome"] == "ok"]
    tokens = float(np.median([a["completion_tokens"] for a in answered]))
    spec = truth.models["atlas-mini"].latency
    expected = float(spec.ttft.ppf(np.array([0.5]))[0]) + spec.per_output_token_s.mean() * tokens
    got = float(fitted.models["atlas-mini"].latency.ppf(np.array([0.5]))[0])
    assert got == pytest.approx(expected, rel=0.25)
