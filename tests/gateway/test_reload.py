"""Hot reload: the watched config file is applied under load without a failed request;
an invalid version is refused with a log line and the old config keeps serving."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import openai

from router.config import dump_config
from router.testing_http import Json, openai_completion
from tests.gateway.helpers import endpoint, make_config, wait_for

PROMPT = [{"role": "user", "content": "Return a JSON object."}]


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_hot_reload_under_load_drops_no_request_and_refuses_a_bad_file(
    servers, gateway, tmp_path, caplog
) -> None:
    slow = {m: Json(openai_completion(f'{{"by": "{m}"}}'), delay_s=0.03) for m in ("a", "b")}
    ups = {m: servers(default=reply) for m, reply in slow.items()}
    models = {m: endpoint(s.url) for m, s in ups.items()}
    path = tmp_path / "tuned.yaml"
    versions = [
        dump_config(make_config(models, {"default": chain}), "yaml")
        for chain in (["a", "b"], ["b", "a"], ["a"], ["b"])
    ]
    write_atomically(path, versions[0])
    gw = gateway(path, watch=True)
    caplog.set_level(logging.INFO, logger="costroute.gateway")
    reloads = gw.gateway.metrics.reloads

    answered: list[str] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def load() -> None:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
        while not stop.is_set():
            try:
                answer = client.chat.completions.create(model="auto", messages=PROMPT)
                answered.append(answer.model)
            except BaseException as exc:  # noqa: BLE001 - any failure fails the test
                failures.append(exc)

    workers = [threading.Thread(target=load) for _ in range(4)]
    for worker in workers:
        worker.start()
    try:

        def applied(n: int) -> bool:
            return reloads.labels("applied")._value.get() == n

        for i, text in enumerate(versions[1:3], start=1):
            time.sleep(0.3)
            write_atomically(path, text)
            wait_for(lambda i=i: applied(i), 10, what=f"reload {i}")
        time.sleep(0.2)
        write_atomically(path, "models: [this is not a config")  # refused
        wait_for(lambda: reloads.labels("refused")._value.get() == 1, 10, what="the refusal")
        time.sleep(0.2)
        before = len(answered)
        time.sleep(0.2)
        assert len(answered) > before and set(answered[before:]) == {"a"}  # old one serves
        write_atomically(path, versions[3])
        wait_for(lambda: applied(3), 10, what="reload 3")
        time.sleep(0.2)
        settled = len(answered)
        time.sleep(0.3)
    finally:
        stop.set()
        for worker in workers:
            worker.join(5)
    assert failures == []
    assert len(answered) > 40
    assert set(answered[settled:]) == {"b"}  # the last version routes everything to b
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 1 and "still serving the previous config" in refused[0]
    assert "tuned.yaml" in refused[0]
    # Breakers and spend carried over: every answer so far was booked once.
    ledger = gw.gateway.router.policy.ledger
    spent = gw.call(lambda: ledger.spent_total)
    assert abs(spent - 0.01 * len(answered)) < 1e-6


def test_reload_keeps_state_and_a_removed_route_falls_to_the_default(servers, gateway, tmp_path):
    up = servers(default=Json(openai_completion("SELECT 1")))
    models = {"a": endpoint(up.url)}
    path = tmp_path / "tuned.json"
    path.write_text(
        dump_config(make_config(models, {"default": ["a"], "sql_query": ["a"]}), "json")
    )
    gw = gateway(path)  # not watched: reload on demand
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model="sql_query", messages=PROMPT)
    assert raw.headers["x-costroute-route"] == "sql_query"
    path.write_text(dump_config(make_config(models, {"default": ["a"]}), "json"))
    assert gw.call(gw.gateway.reload_from_file) is True
    assert gw.call(gw.gateway.reload_from_file) is False  # unchanged: nothing to do
    raw = client.chat.completions.with_raw_response.create(model="sql_query", messages=PROMPT)
    assert raw.headers["x-costroute-route"] == "default"  # no such route any more
    assert "sql_query" not in [m.id for m in client.models.list().data]
    assert gw.call(lambda: gw.gateway.router.policy.ledger.spent_total) == 0.02
