"""The official OpenAI and Anthropic SDKs through the gateway over real sockets: plain
and streamed answers from the provider twin, tool calls both ways, the routing table
and the model list."""

from __future__ import annotations

import json
from collections.abc import Iterator

import anthropic
import openai
import pytest

from router.gateway import GatewayServer
from router.testing_http import (
    SSE,
    Json,
    ScriptedServer,
    anthropic_message,
    openai_completion,
    openai_stream,
    openai_tool_call,
)
from sim.twin.server import TwinServer, answer_text
from sim.world.scenario import parse_scenario
from tests.gateway.helpers import OK, endpoint, make_config

JSON_ANSWER = answer_text("ok", "json")


@pytest.fixture(scope="module")
def twin() -> Iterator[TwinServer]:
    """Two twin models that always complete, 0.2 scenario-s each (10 ms on the wall)."""
    model = {
        "provider": "twin",
        "completion": {"default": 1.0},
        "latency": {"dist": "fixed", "value_s": 0.2},
        "fail_fast_latency_s": 0.05,
        "cost_per_task": 0.001,
    }
    scenario = parse_scenario({"name": "gw", "models": {"fast": model, "slow": model}})
    with TwinServer(scenario, time_scale=0.05) as server:
        yield server


def twin_config(twin: TwinServer):
    ep = {"kind": "openai", "base_url": twin.url, "api_key_env": None}
    models = {"fast": {**ep, "model": "fast"}, "slow": {**ep, "model": "slow"}}
    return make_config(
        models, {"json_parse": ["fast", "slow"], "default": ["slow", "fast"]}, default="default"
    )


def oa(gw: GatewayServer, **kw: object) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0, **kw)


def an(gw: GatewayServer, **kw: object) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0, **kw)


JSON_PROMPT = [{"role": "user", "content": "Return a JSON object describing the build."}]


def test_openai_sdk_plain_and_streamed_answers_from_the_twin(twin, gateway) -> None:
    gw = gateway(twin_config(twin))
    client = oa(gw)
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=JSON_PROMPT)
    answer = raw.parse()
    assert answer.choices[0].message.content == JSON_ANSWER
    assert answer.model == "fast" and answer.choices[0].finish_reason == "stop"
    assert raw.headers["x-costroute-route"] == "json_parse"
    assert raw.headers["x-costroute-model"] == "fast"
    assert answer.usage.completion_tokens > 0

    chunks = list(
        client.chat.completions.create(
            model="auto",
            messages=JSON_PROMPT,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == JSON_ANSWER
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1  # streamed
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


def test_anthropic_sdk_plain_and_streamed_answers_from_the_twin(twin, gateway) -> None:
    gw = gateway(twin_config(twin))
    client = an(gw)
    message = client.messages.create(model="auto", max_tokens=256, messages=JSON_PROMPT)
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == JSON_ANSWER
    assert message.stop_reason == "end_turn" and message.model == "fast"
    assert message.usage.output_tokens > 0

    with client.messages.stream(model="auto", max_tokens=256, messages=JSON_PROMPT) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(pieces) == JSON_ANSWER and len(pieces) > 1
    assert final.content[0].text == JSON_ANSWER and final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "read_file",
            "description": "Read a file",
            "parameters": {"type": "object", "properties": {"path": {"type": "string"}}},
        },
    }
]
CALL = openai_tool_call("call_9", "read_file", {"path": "src/app.py"})


def test_openai_tool_calls_pass_through_plain_and_streamed(servers, gateway) -> None:
    up = servers(
        Json(openai_completion(None, finish_reason="tool_calls", tool_calls=[CALL])),
        SSE(openai_stream(("Let me look.",), finish_reason="tool_calls", tool_calls=[CALL])),
    )
    gw = gateway(make_config({"a": endpoint(up.url)}))
    client = oa(gw)
    answer = client.chat.completions.create(
        model="auto", messages=JSON_PROMPT, tools=TOOLS, tool_choice="auto"
    )
    message = answer.choices[0].message
    assert message.content is None and answer.choices[0].finish_reason == "tool_calls"
    assert [
        (c.id, c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls
    ] == [("call_9", "read_file", {"path": "src/app.py"})]
    sent = up.requests[0].json()
    assert sent["tools"] == TOOLS and sent["tool_choice"] == "auto"
    assert sent["messages"] == JSON_PROMPT and sent["model"] == "up-m"

    chunks = list(
        client.chat.completions.create(model="auto", messages=JSON_PROMPT, tools=TOOLS, stream=True)
    )
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert "".join(d.content or "" for d in deltas) == "Let me look."
    calls = [tc for d in deltas for tc in d.tool_calls or ()]
    assert calls[0].id == "call_9" and calls[0].function.name == "read_file"
    assert json.loads("".join(tc.function.arguments or "" for tc in calls)) == {
        "path": "src/app.py"
    }
    assert deltas[-1].tool_calls is None and chunks[-1].choices[0].finish_reason == "tool_calls"
    assert up.requests[1].json()["stream"] is True  # streamed from the upstream too


def test_anthropic_client_with_tools_over_an_openai_upstream_round_trips(servers, gateway) -> None:
    up = servers(
        Json(openai_completion("Reading it.", finish_reason="tool_calls", tool_calls=[CALL])),
        Json(openai_completion("The file defines main().")),
        SSE(openai_stream(("Reading", " it."), finish_reason="tool_calls", tool_calls=[CALL])),
    )
    gw = gateway(make_config({"a": endpoint(up.url)}))
    client = an(gw)
    tools = [
        {
            "name": "read_file",
            "description": "Read a file",
            "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}},
        }
    ]
    first = client.messages.create(
        model="auto",
        max_tokens=512,
        system="You are a coding agent.",
        messages=[{"role": "user", "content": "What does src/app.py do?"}],
        tools=tools,
        tool_choice={"type": "auto"},
    )
    assert [b.type for b in first.content] == ["text", "tool_use"]
    use = first.content[1]
    assert (use.id, use.name, use.input) == ("call_9", "read_file", {"path": "src/app.py"})
    assert first.stop_reason == "tool_use"
    sent = up.requests[0].json()
    assert sent["messages"] == [
        {"role": "system", "content": "You are a coding agent."},
        {"role": "user", "content": "What does src/app.py do?"},
    ]
    assert sent["tools"] == [{"type": "function", "function": {**TOOLS[0]["function"]}}]
    assert sent["tool_choice"] == "auto"

    second = client.messages.create(
        model="auto",
        max_tokens=512,
        messages=[
            {"role": "user", "content": "What does src/app.py do?"},
            {"role": "assistant", "content": first.content},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "call_9", "content": "def main(): ..."}
                ],
            },
        ],
        tools=tools,
    )
    assert second.content[0].text == "The file defines main()."
    turns = up.requests[1].json()["messages"]
    assert turns[1] == {
        "role": "assistant",
        "content": "Reading it.",
        "tool_calls": [
            {
                "id": "call_9",
                "type": "function",
                "function": {"name": "read_file", "arguments": '{"path":"src/app.py"}'},
            }
        ],
    }
    assert turns[2] == {"role": "tool", "tool_call_id": "call_9", "content": "def main(): ..."}

    with client.messages.stream(
        model="auto",
        max_tokens=512,
        messages=[{"role": "user", "content": "What does src/app.py do?"}],
        tools=tools,
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Reading it."
    assert [b.type for b in final.content] == ["text", "tool_use"]
    assert final.content[1].input == {"path": "src/app.py"} and final.stop_reason == "tool_use"


def test_an_anthropic_upstream_serves_an_openai_client(servers, gateway) -> None:
    up = servers(Json(anthropic_message("SELECT 1", input_tokens=9, output_tokens=3)))
    gw = gateway(make_config({"claude": endpoint(up.url, kind="anthropic")}))
    answer = oa(gw).chat.completions.create(model="auto", messages=JSON_PROMPT)
    assert answer.choices[0].message.content == "SELECT 1"
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (9, 3)
    assert up.requests[0].path == "/v1/messages"
    assert up.requests[0].headers["x-api-key"]  # the provider's key, from its env var


# -- which route -------------------------------------------------------------------------


@pytest.fixture
def three_routes(servers, gateway) -> tuple[GatewayServer, dict[str, ScriptedServer]]:
    ups = {m: servers(default=OK) for m in ("a", "b", "c")}
    config = make_config(
        {m: endpoint(s.url) for m, s in ups.items()},
        {"sql_query": ["a"], "json_parse": ["b"], "default": ["c"]},
        default="default",
    )
    return gateway(config), ups


@pytest.mark.parametrize(
    ("model", "prompt", "header", "route", "answered_by"),
    [
        ("sql_query", "hello", None, "sql_query", "a"),  # a route name
        ("sql", "hello", None, "sql_query", "a"),  # a task type aliased to a route
        ("auto", "Write a SQL query: select the names from users", None, "sql_query", "a"),
        ("auto", "hello there", None, "default", "c"),  # unclassified: the default route
        ("gpt-4o", "Return a JSON object", None, "json_parse", "b"),  # unknown name: as auto
        ("c", "Write a SQL query: select 1 from t", None, "sql_query", "c"),  # model id first
        ("b", "hello there", None, "default", "b"),  # a model outside the chain, first
        ("sql_query", "hello", "json", "json_parse", "b"),  # the header overrides
        ("auto", "Write a SQL query", "json_parse", "json_parse", "b"),
    ],
)
def test_which_route_serves_a_request(
    three_routes, model, prompt, header, route, answered_by
) -> None:
    gw, ups = three_routes
    headers = {"X-Task-Type": header} if header else None
    raw = oa(gw).chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": prompt}], extra_headers=headers
    )
    assert raw.headers["x-costroute-route"] == route
    assert raw.headers["x-costroute-model"] == answered_by
    assert raw.parse().model == answered_by
    assert [m for m, s in ups.items() if s.requests] == [answered_by]


def test_models_lists_auto_routes_aliases_and_model_ids_in_both_dialects(three_routes) -> None:
    gw, _ = three_routes
    ids = [m.id for m in oa(gw).models.list().data]
    assert ids[:4] == ["auto", "sql_query", "json_parse", "default"]
    assert {"sql", "json", "a", "b", "c"} <= set(ids)
    assert "regex" not in ids  # aliased to a route this config does not have
    listed = an(gw).models.list()
    assert [m.id for m in listed.data] == ids and listed.data[0].type == "model"


def test_a_malformed_request_is_a_400_in_the_clients_format(three_routes) -> None:
    gw, ups = three_routes
    with pytest.raises(openai.BadRequestError) as oe:
        oa(gw).chat.completions.create(model="auto", messages=[{"role": "robot", "content": "x"}])
    assert (
        "messages[0].role" in oe.value.message and oe.value.body["type"] == "invalid_request_error"
    )
    with pytest.raises(anthropic.BadRequestError) as ae:
        an(gw).messages.create(
            model="auto", max_tokens=10, messages=[{"role": "system", "content": "x"}]
        )
    assert ae.value.body["error"]["type"] == "invalid_request_error"
    assert "messages[0].role" in ae.value.body["error"]["message"]
    assert not any(s.requests for s in ups.values())  # refused before any provider call


def test_health_ready_and_count_tokens(three_routes) -> None:
    import httpx

    gw, ups = three_routes
    assert httpx.get(gw.url + "/health").json() == {"status": "ok"}
    assert httpx.get(gw.url + "/ready").json() == {"status": "ready", "routes": 3, "models": 3}
    body = {"model": "auto", "messages": [{"role": "user", "content": "x" * 400}]}
    counted = an(gw).messages.count_tokens(**body)
    assert 100 < counted.input_tokens < 130  # ~4 characters a token
    assert not any(s.requests for s in ups.values())


def test_the_httpx_upstream_serves_the_same_answers(twin, gateway) -> None:
    gw = gateway(twin_config(twin), upstream="httpx")
    assert gw.gateway.router._transport is None  # httpx's own transport, not aiohttp's
    answer = oa(gw).chat.completions.create(model="auto", messages=JSON_PROMPT)
    assert answer.choices[0].message.content == JSON_ANSWER
    chunks = list(oa(gw).chat.completions.create(model="auto", messages=JSON_PROMPT, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == JSON_ANSWER
