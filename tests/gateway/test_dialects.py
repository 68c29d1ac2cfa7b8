"""The client dialects without sockets: Anthropic requests in OpenAI terms, the event
streams each dialect's SDK parses, and how a failed task becomes an HTTP status."""

from __future__ import annotations

import json

import pytest

from router import RoutingPolicy
from router.gateway import ClientError, failure_reply, parse_anthropic, parse_openai
from router.gateway.dialects import AnthropicEvents, OpenAIEvents, error_body
from router.providers import Completion
from router.providers.base import TextDelta, ToolCallDelta
from router.result import Attempt, TaskResult
from tests.gateway.helpers import make_config


def test_an_anthropic_conversation_maps_to_openai_messages_tools_and_choice() -> None:
    request = parse_anthropic(
        {
            "model": "auto",
            "max_tokens": 100,
            "system": [
                {"type": "text", "text": "Be brief."},
                {"type": "text", "text": "Use tools."},
            ],
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Look:"},
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": "AAA"},
                        },
                    ],
                },
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "hmm", "signature": "s"},
                        {"type": "tool_use", "id": "t1", "name": "ls", "input": {"dir": "."}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "t1",
                            "content": [{"type": "text", "text": "a.py"}],
                            "is_error": True,
                        },
                        {"type": "text", "text": "Now fix it."},
                    ],
                },
            ],
            "tools": [
                {"name": "ls", "input_schema": {"type": "object"}},
                {"type": "web_search_20250305", "name": "web_search"},  # a server tool
            ],
            "tool_choice": {"type": "any"},
            "stream": True,
        }
    )
    assert request.messages == [
        {"role": "system", "content": "Be brief.\n\nUse tools."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Look:"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "t1",
                    "type": "function",
                    "function": {"name": "ls", "arguments": '{"dir":"."}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "t1", "content": "[tool error] a.py"},
        {"role": "user", "content": [{"type": "text", "text": "Now fix it."}]},
    ]
    assert request.tools == [
        {"type": "function", "function": {"name": "ls", "parameters": {"type": "object"}}}
    ]
    assert request.tool_choice == "required" and request.stream and request.max_tokens == 100


@pytest.mark.parametrize(
    ("parse", "body", "says"),
    [
        (
            parse_anthropic,
            {"model": "auto", "messages": [{"role": "user", "content": "x"}]},
            "max_tokens",
        ),
        (parse_anthropic, {"max_tokens": 5, "messages": []}, "messages"),
        (parse_openai, {"messages": [{"role": "user", "content": "x"}], "n": 3}, "n=1"),
        (parse_openai, {"model": 5, "messages": [{"role": "user", "content": "x"}]}, "model"),
        (parse_openai, ["not", "an", "object"], "JSON object"),
    ],
)
def test_requests_the_gateway_cannot_serve_are_client_errors(parse, body, says) -> None:  # noqa: ANN001
    with pytest.raises(ClientError, match=says) as info:
        parse(body)
    assert info.value.status == 400


def _sse(data: bytes) -> list[tuple[str | None, dict | str]]:
    events = []
    for block in data.decode().strip().split("\n\n"):
        name = None
        payload = ""
        for line in block.splitlines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                payload = line[6:]
        events.append((name, payload if payload == "[DONE]" else json.loads(payload)))
    return events


def test_the_openai_stream_ends_with_finish_usage_and_done_or_an_error_event() -> None:
    out = OpenAIEvents("r1", 0, include_usage=True)
    data = out.delta("m", TextDelta("Hi"))
    data += out.delta("m", ToolCallDelta(0, "c", "f", '{"a":'))
    data += out.delta("m", ToolCallDelta(0, None, None, "1}"))
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}
    data += out.end("m", Completion("Hi", 3, 4, "m", 0.1, "tool_calls", tool_calls=[call]))
    events = [payload for _, payload in _sse(data)]
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": "Hi"}
    assert events[1]["choices"][0]["delta"]["tool_calls"][0] == {
        "index": 0,
        "id": "c",
        "type": "function",
        "function": {"arguments": '{"a":', "name": "f"},
    }
    assert events[3]["choices"][0]["finish_reason"] == "tool_calls"
    assert events[4]["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    assert events[5] == "[DONE]"
    (error,) = _sse(out.error(502, "cut"))
    assert error[1] == {
        "error": {"message": "cut", "type": "upstream_error", "param": None, "code": None}
    }


def test_the_anthropic_stream_sends_tool_use_blocks_whole_at_the_end() -> None:
    out = AnthropicEvents("msg_1")
    assert out.delta("m", ToolCallDelta(0, "c", "f", "{")) == b""  # held back
    data = out.delta("m", TextDelta("Hi"))
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
    data += out.end("m", Completion("Hi", 3, 4, "m", 0.1, "tool_calls", tool_calls=[call]))
    names = [name for name, _ in _sse(data)]
    assert names == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    events = [payload for _, payload in _sse(data)]
    assert events[4]["content_block"] == {"type": "tool_use", "id": "c", "name": "f", "input": {}}
    assert json.loads(events[5]["delta"]["partial_json"]) == {"a": 1}
    assert events[7]["delta"]["stop_reason"] == "tool_use"
    assert events[7]["usage"] == {"input_tokens": 3, "output_tokens": 4}
    assert error_body("anthropic", 503, "x") == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "x"},
    }


def _failed(
    attempts: list[tuple[str, float | None]], skips=(), error: str = "exhausted"
) -> TaskResult:  # noqa: ANN001
    tried = [
        Attempt("a", 1, 0.0, kind, 0.1, 0.0, f"{kind} detail", retry_after_s=ra)
        for kind, ra in attempts
    ]
    return TaskResult(
        "t", "json", "default", False, None, None, 0.0, 0.0, 0.1, tried, list(skips), error
    )


@pytest.mark.parametrize(
    ("attempts", "status", "code", "retry_after"),
    [
        ([("rate_limited", 2.0), ("rate_limited", 0.5)], 429, "rate_limited", 0.5),
        ([("context_length", None)], 400, "context_length_exceeded", None),
        ([("timeout", None), ("first_token_timeout", None)], 504, "timeout", None),
        ([("server_error", None), ("rate_limited", 1.0)], 502, "upstream_error", None),
    ],
)
def test_how_a_failed_task_becomes_a_status(attempts, status, code, retry_after) -> None:  # noqa: ANN001
    policy = RoutingPolicy(
        make_config({"a": {"kind": "openai", "base_url": "http://x", "model": "m"}})
    )
    got = failure_reply(_failed(attempts), policy, 0.0)
    assert (got[0], got[2], got[3]) == (status, code, retry_after)


def test_every_candidate_skipped_retries_after_the_soonest_readmission() -> None:
    policy = RoutingPolicy(
        make_config({"a": {"kind": "openai", "base_url": "http://x", "model": "m"}})
    )
    policy.breakers[0].open_until = 1000.0 + 42.5
    result = _failed([], skips=[("a", "breaker_open")], error="no_candidate")
    assert failure_reply(result, policy, 1000.0)[::3] == (503, 42.5)
    budget = _failed([], skips=[("a", "budget")], error="no_candidate")
    assert failure_reply(budget, policy, 86_400.0 * 3 + 100)[3] == 86_400 - 100
    static = _failed([], skips=[("a", "cost")], error="no_candidate")
    assert failure_reply(static, policy, 0.0)[::3] == (503, None)
