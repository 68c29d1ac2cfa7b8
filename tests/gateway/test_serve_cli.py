"""`costroute serve`: every option documented, bad input one line and exit 2, and a
real server process that drains its requests on SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import typer

from router.config import dump_config
from router.gateway.cli import app
from router.testing_http import Json, openai_completion
from tests.gateway.helpers import PROVIDER_KEY, PROVIDER_KEY_ENV, endpoint, make_config

COSTROUTE = str(Path(sys.executable).parent / "costroute")


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [COSTROUTE, *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
    )


def test_serve_help_documents_every_option() -> None:
    res = run("serve", "--help")
    assert res.returncode == 0
    command = typer.main.get_command(app).commands["serve"]  # type: ignore[attr-defined]
    options = [opt for param in command.params for opt in param.opts]
    assert len(options) >= 16
    flat = " ".join(res.stdout.split())
    for opt in options:
        assert opt in flat, opt
    for param in command.params:
        if param.name != "help":
            assert param.help and len(param.help) > 20, param.name  # a sentence, not a stub


def one_line_exit_2(res: subprocess.CompletedProcess[str]) -> str:
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.stderr
    return lines[0]


def test_a_bad_or_missing_config_is_one_line_exit_2(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: []\nroutes: {}\ndefault_route: x\n")
    assert "bad.yaml" in one_line_exit_2(run("serve", "--config", str(bad)))
    assert "no such file" in one_line_exit_2(run("serve", "--config", str(tmp_path / "nope.yaml")))


@pytest.fixture
def good_config(tmp_path) -> Path:
    path = tmp_path / "good.yaml"
    path.write_text(dump_config(make_config({"a": endpoint("http://127.0.0.1:9")}), "yaml"))
    return path


def test_a_port_in_use_is_one_line_exit_2(good_config) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = one_line_exit_2(run("serve", "--config", str(good_config), "--port", str(port)))
    assert f"127.0.0.1:{port}" in line and "already in use" in line


def test_a_missing_key_beyond_loopback_and_a_bad_option_are_one_line_exit_2(good_config) -> None:
    env = {"COSTROUTE_GATEWAY_KEY": ""}
    args = ("serve", "--config", str(good_config), "--host", "0.0.0.0", "--port", "0")
    assert "COSTROUTE_GATEWAY_KEY" in one_line_exit_2(run(*args, env=env))
    line = one_line_exit_2(run("serve", "--config", str(good_config), "--upstream", "curl"))
    assert "--upstream" in line


def test_sigterm_drains_the_request_in_flight_then_exits_0(servers, tmp_path) -> None:
    up = servers(default=Json(openai_completion("drained"), delay_s=1.0))
    config = tmp_path / "tuned.yaml"
    config.write_text(dump_config(make_config({"a": endpoint(up.url)}), "yaml"))
    record = tmp_path / "gw.ndjson"
    proc = subprocess.Popen(
        [COSTROUTE, "serve", "--config", str(config), "--port", "0", "--record", str(record)],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, PROVIDER_KEY_ENV: PROVIDER_KEY},
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # "costroute: info: listening on http://127.0.0.1:PORT ..."
        match = re.search(r"listening on (http://\S+)", line)
        assert match, line
        url = match.group(1)
        got: dict[str, object] = {}

        def call() -> None:
            response = httpx.post(
                url + "/v1/chat/completions",
                json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]},
                timeout=10,
            )
            got["status"] = response.status_code
            got["text"] = response.json()["choices"][0]["message"]["content"]

        client = threading.Thread(target=call)
        client.start()
        deadline = time.monotonic() + 5
        while not up.requests and time.monotonic() < deadline:
            time.sleep(0.01)
        assert up.requests, "the request did not reach the upstream"
        proc.send_signal(signal.SIGTERM)
        client.join(10)
        assert got == {"status": 200, "text": "drained"}  # finished, not cut
        assert proc.wait(10) == 0
        rest = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    access = [json.loads(x) for x in rest.splitlines() if x.startswith("{")]
    assert [(a["status"], a["outcome"]) for a in access] == [(200, "ok")]
    assert json.loads(record.read_text())["success"] is True
    assert PROVIDER_KEY not in rest
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/health")
