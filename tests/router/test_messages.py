"""Agent-shaped requests: conversations with tool calls, through every provider.

The wire format is checked over a real loopback server: what the server received is
compared, as JSON, with exactly what the provider's dialect should carry.
"""

from __future__ import annotations

import asyncio
import json
import sys
import types
from typing import Any

import pytest

from router.errors import InputError
from router.providers import (
    AnthropicProvider,
    Completion,
    Endpoint,
    LiteLLMProvider,
    OpenAIProvider,
    make_provider,
)
from router.providers._http import check_messages, check_tool_choice, check_tools
from router.providers.anthropic import (
    anthropic_request_parts,
    anthropic_tool_choice,
    anthropic_tools,
)
from router.task import Task
from router.testing_http import (
    SSE,
    Json,
    ScriptedServer,
    anthropic_message,
    anthropic_stream,
    anthropic_tool_use,
    openai_completion,
    openai_stream,
    openai_tool_call,
)

KEY_ENV = "COSTROUTE_TEST_API_KEY"
KEY = "sk-test-DISTINCTIVE-7f3a9c1e5b2d8046"

RUN_TESTS = {
    "type": "function",
    "function": {
        "name": "run_tests",
        "description": "Run the test suite and report failures.",
        "parameters": {
            "type": "object",
            "properties": {"path": {"type": "string"}},
            "required": ["path"],
        },
    },
}
TOOLS = [RUN_TESTS]

#: A five-turn agent conversation: system, user, an assistant tool call (content
#: None), the tool's result, and a user turn whose content is a parts list.
CONVERSATION: list[dict[str, Any]] = [
    {"role": "system", "content": "You are a coding agent. Answer with a unified diff."},
    {"role": "user", "content": "Fix the failing test in tests/test_dates.py."},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "run_tests", "arguments": '{"path": "tests/test_dates.py"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "1 failed: test_iso_week"},
    {
        "role": "user",
        "content": [{"type": "text", "text": "Now patch parse_date so the test passes."}],
    },
]

#: What the Messages API must receive for CONVERSATION (with TOOLS, tool_choice "auto").
ANTHROPIC_CONVERSATION: dict[str, Any] = {
    "model": "m-1",
    "max_tokens": 4096,
    "system": "You are a coding agent. Answer with a unified diff.",
    "messages": [
        {"role": "user", "content": "Fix the failing test in tests/test_dates.py."},
        {
            "role": "assistant",
            "content": [
                {
                    "type": "tool_use",
                    "id": "call_1",
                    "name": "run_tests",
                    "input": {"path": "tests/test_dates.py"},
                }
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "call_1",
                    "content": "1 failed: test_iso_week",
                }
            ],
        },
        {
            "role": "user",
            "content": [{"type": "text", "text": "Now patch parse_date so the test passes."}],
        },
    ],
    "tools": [
        {
            "name": "run_tests",
            "description": "Run the test suite and report failures.",
            "input_schema": RUN_TESTS["function"]["parameters"],
        }
    ],
    "tool_choice": {"type": "auto"},
}


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)


def endpoint(kind: str, server: ScriptedServer, **kw: Any) -> Endpoint:
    return Endpoint(
        kind=kind,  # type: ignore[arg-type]
        base_url=server.url + ("/v1" if kind == "openai" else ""),
        model="m-1",
        api_key_env=KEY_ENV,
        **kw,
    )


def call(ep: Endpoint, messages: list[dict[str, Any]], **kw: Any) -> Completion:
    async def go() -> Completion:
        async with make_provider(ep) as provider:
            return await provider.complete(messages, timeout_s=3, **kw)

    return asyncio.run(go())


# -- Task ---------------------------------------------------------------------------------


def test_task_fields_are_added_at_the_end_so_positional_construction_still_works() -> None:
    task = Task("t", "sql", None, 10, 5, 1.5, {"schema": {}})
    assert (task.prompt_tokens, task.arrival_s, task.spec) == (10, 1.5, {"schema": {}})
    assert (task.messages, task.tools, task.tool_choice) == (None, None, None)


def test_chat_messages_from_a_payload_or_a_conversation() -> None:
    assert Task("t", payload="hi").chat_messages() == [{"role": "user", "content": "hi"}]
    assert Task("t", payload="hi").chat_messages("Be brief.") == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
    ]
    assert Task("t").chat_messages() == [{"role": "user", "content": ""}]
    task = Task("t", messages=CONVERSATION, tools=TOOLS, tool_choice="auto")
    sent = task.chat_messages("Router default prompt.")
    # The conversation has its own system message: the router's is not added, and
    # the messages are the same dicts, unchanged, in a new list.
    assert sent == CONVERSATION and sent is not CONVERSATION
    assert all(a is b for a, b in zip(sent, CONVERSATION, strict=True))
    no_system = Task("t", messages=CONVERSATION[1:])
    assert no_system.chat_messages("Router default prompt.")[0] == {
        "role": "system",
        "content": "Router default prompt.",
    }
    developer = Task("t", messages=[{"role": "developer", "content": "x"}, CONVERSATION[1]])
    assert developer.chat_messages("y")[0]["role"] == "developer"


def test_resolved_type_uses_the_last_user_message_when_there_is_no_payload() -> None:
    assert Task("t", messages=CONVERSATION).resolved_type() == "bug_patch"
    regex = [
        {"role": "user", "content": "Fix the bug in my SQL query"},
        {"role": "assistant", "content": "Sure."},
        {"role": "user", "content": [{"type": "text", "text": "Actually, write a regex."}]},
    ]
    assert Task("t", messages=regex).resolved_type() == "regex"
    assert Task("t", payload="write a regex", messages=CONVERSATION).resolved_type() == "regex"
    assert Task("t", "json", messages=regex).resolved_type() == "json"
    only_tools = [CONVERSATION[2], CONVERSATION[3]]
    assert Task("t", messages=only_tools).resolved_type() == "unknown"


# -- argument checks ------------------------------------------------------------------------


def test_agent_shaped_messages_are_accepted() -> None:
    assert check_messages(CONVERSATION) is CONVERSATION
    check_messages(
        [
            {"role": "developer", "content": "x"},
            {
                "role": "user",
                "name": "dev",
                "content": [
                    {"type": "text", "text": "what is in this image?"},
                    {"type": "image_url", "image_url": {"url": "https://example.test/a.png"}},
                ],
            },
            {"role": "assistant", "content": "Let me check.", "tool_calls": [openai_tool_call()]},
            {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "ok"}]},
        ]
    )
    assert check_tools(TOOLS) is TOOLS and check_tools(None) is None
    for choice in ("auto", "none", "required", {"type": "function", "function": {"name": "f"}}):
        assert check_tool_choice(choice) == choice


GOOD_CALL = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        ("hello", "messages: expected a non-empty list"),
        ([], "messages: expected a non-empty list"),
        (["hi"], "messages[0]: expected a dict with 'role' and 'content', got str"),
        ([{"role": "robot", "content": "x"}], "messages[0].role: expected one of system"),
        ([{"content": "x"}], "messages[0].role: expected one of"),
        ([{"role": "user"}], "messages[0].content: expected a string or a non-empty list"),
        ([{"role": "user", "content": 3}], "messages[0].content: expected a string"),
        ([{"role": "user", "content": []}], "messages[0].content: expected a string"),
        (
            [{"role": "user", "content": "ok"}, {"role": "user", "content": [{"text": "x"}]}],
            "messages[1].content[0]: expected a dict with a str 'type'",
        ),
        (
            [{"role": "user", "content": [{"type": "text", "text": None}]}],
            "messages[0].content[0]: a text part needs a str 'text'",
        ),
        ([{"role": "assistant", "content": None}], "messages[0].content: expected a string"),
        (
            [{"role": "assistant", "content": None, "tool_calls": []}],
            "messages[0].tool_calls: expected a non-empty list",
        ),
        (
            [{"role": "assistant", "tool_calls": [{**GOOD_CALL, "id": ""}]}],
            "messages[0].tool_calls[0].id: expected a non-empty string",
        ),
        (
            [{"role": "assistant", "tool_calls": [{**GOOD_CALL, "type": "code"}]}],
            "messages[0].tool_calls[0].type: expected 'function'",
        ),
        (
            [
                {
                    "role": "assistant",
                    "tool_calls": [GOOD_CALL, {**GOOD_CALL, "function": {"name": "f"}}],
                }
            ],
            "messages[0].tool_calls[1].function: expected a dict with a non-empty str 'name'",
        ),
        (
            [{"role": "user", "content": "x", "tool_calls": [GOOD_CALL]}],
            "messages[0]: only assistant messages carry 'tool_calls'",
        ),
        (
            [{"role": "user", "content": "x"}, {"role": "tool", "content": "result"}],
            "messages[1]: a tool message needs a non-empty str 'tool_call_id'",
        ),
        ([{"role": "user", "content": "x", "name": 7}], "messages[0].name: expected a string"),
    ],
)
def test_garbage_messages_are_one_line_input_errors(messages: Any, expected: str) -> None:
    with pytest.raises(InputError) as info:
        check_messages(messages)
    assert str(info.value).startswith(expected)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("tools", "expected"),
    [
        ("run_tests", "tools: expected a list"),
        ([{"type": "retrieval"}], "tools[0]: expected {'type': 'function'"),
        ([RUN_TESTS, {"type": "function", "function": {}}], "tools[1].function: expected"),
        (
            [{"type": "function", "function": {"name": "f", "parameters": "{}"}}],
            "tools[0].function.parameters: expected a JSON Schema object",
        ),
    ],
)
def test_garbage_tools_are_input_errors(tools: Any, expected: str) -> None:
    with pytest.raises(InputError, match=r"^" + expected.replace("[", r"\[").replace("{", r"\{")):
        check_tools(tools)


@pytest.mark.parametrize("choice", ["sometimes", 3, {"function": {"name": "f"}}])
def test_garbage_tool_choice_is_an_input_error(choice: Any) -> None:
    with pytest.raises(InputError, match=r"^tool_choice: expected one of auto, none, required"):
        check_tool_choice(choice)


def test_bad_messages_never_reach_the_wire() -> None:
    with ScriptedServer() as server:
        for kind in ("openai", "anthropic"):
            with pytest.raises(InputError, match=r"messages\[0\]\.role"):
                call(endpoint(kind, server), [{"role": "robot", "content": "x"}])
            with pytest.raises(InputError, match=r"^tools"):
                call(endpoint(kind, server), CONVERSATION, tools="run_tests")
    assert server.requests == []


# -- OpenAI: passed through unchanged -------------------------------------------------------


def test_openai_sends_the_conversation_tools_and_tool_choice_unchanged() -> None:
    with ScriptedServer(Json(openai_completion("--- a/dates.py"))) as server:
        done = call(endpoint("openai", server), CONVERSATION, tools=TOOLS, tool_choice="auto")
    assert done.text == "--- a/dates.py"
    (request,) = server.requests
    assert request.json() == {
        "model": "m-1",
        "messages": CONVERSATION,
        "tools": TOOLS,
        "tool_choice": "auto",
    }


def test_openai_tool_call_answer_usage_model_and_request_id_reach_the_completion() -> None:
    answer = openai_completion(
        None,
        finish_reason="tool_calls",
        model="gpt-test-2025-01-01",
        id="chatcmpl-42",
        prompt_tokens=321,
        completion_tokens=17,
        tool_calls=[openai_tool_call("call_9", "run_tests", {"path": "tests"})],
    )
    with ScriptedServer(Json(answer)) as server:
        done = call(endpoint("openai", server), CONVERSATION, tools=TOOLS)
    assert done.text == ""
    assert done.tool_calls == [
        {
            "id": "call_9",
            "type": "function",
            "function": {"name": "run_tests", "arguments": '{"path": "tests"}'},
        }
    ]
    assert (done.prompt_tokens, done.completion_tokens) == (321, 17)
    assert (done.model, done.request_id) == ("gpt-test-2025-01-01", "chatcmpl-42")
    assert done.raw_finish_reason == "tool_calls" and done.ttft_s is None


def test_openai_request_id_falls_back_to_the_x_request_id_header() -> None:
    body = openai_completion("ok")
    del body["id"]
    with ScriptedServer(Json(body, headers={"x-request-id": "req_abc"})) as server:
        assert call(endpoint("openai", server), CONVERSATION[:2]).request_id == "req_abc"


def test_openai_streamed_tool_calls_are_assembled() -> None:
    calls = [
        openai_tool_call("call_1", "run_tests", {"path": "tests/test_dates.py"}),
        openai_tool_call("call_2", "run_tests", {"path": "tests/test_more.py"}),
    ]
    events = openai_stream((), finish_reason="tool_calls", tool_calls=calls, id="chatcmpl-s1")
    with ScriptedServer(SSE(events)) as server:
        done = call(endpoint("openai", server, stream=True), CONVERSATION, tools=TOOLS)
    assert done.text == "" and done.tool_calls == calls
    assert done.request_id == "chatcmpl-s1" and done.model == "test-model"
    assert done.ttft_s is not None and 0 < done.ttft_s <= done.latency_s
    sent = server.requests[0].json()
    assert sent["messages"] == CONVERSATION and sent["tools"] == TOOLS


# -- Anthropic: mapped to the Messages API --------------------------------------------------


def test_anthropic_receives_the_conversation_mapped_exactly() -> None:
    with ScriptedServer(Json(anthropic_message("--- a/dates.py"))) as server:
        done = call(endpoint("anthropic", server), CONVERSATION, tools=TOOLS, tool_choice="auto")
    assert done.text == "--- a/dates.py"
    (request,) = server.requests
    assert request.path == "/v1/messages"
    assert request.json() == ANTHROPIC_CONVERSATION


def test_anthropic_merges_consecutive_tool_results_and_keeps_assistant_text() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "One."},
        {"role": "user", "content": "Run both suites."},
        {
            "role": "assistant",
            "content": "Running both.",
            "tool_calls": [
                openai_tool_call("call_a", "run_tests", {"path": "a"}),
                openai_tool_call("call_b", "run_tests", ""),  # no arguments: input {}
            ],
        },
        {"role": "tool", "tool_call_id": "call_a", "content": "passed"},
        {"role": "tool", "tool_call_id": "call_b", "content": [{"type": "text", "text": "2 f"}]},
        {"role": "assistant", "content": "Both ran."},
        {"role": "system", "content": [{"type": "text", "text": "Two."}]},
        {"role": "user", "content": "Summarise."},
    ]
    system, turns = anthropic_request_parts(messages)
    assert system == "One.\n\nTwo."
    assert turns == [
        {"role": "user", "content": "Run both suites."},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Running both."},
                {"type": "tool_use", "id": "call_a", "name": "run_tests", "input": {"path": "a"}},
                {"type": "tool_use", "id": "call_b", "name": "run_tests", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_a", "content": "passed"},
                {
                    "type": "tool_result",
                    "tool_use_id": "call_b",
                    "content": [{"type": "text", "text": "2 f"}],
                },
            ],
        },
        {"role": "assistant", "content": "Both ran."},
        {"role": "user", "content": "Summarise."},
    ]


def test_anthropic_maps_image_parts_tools_and_tool_choice() -> None:
    _, turns = anthropic_request_parts(
        [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
                    {"type": "image_url", "image_url": {"url": "https://example.test/a.png"}},
                    {"type": "text", "text": "diff these", "cache_control": {"type": "ephemeral"}},
                ],
            }
        ]
    )
    assert turns[0]["content"] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
        {"type": "image", "source": {"type": "url", "url": "https://example.test/a.png"}},
        {"type": "text", "text": "diff these", "cache_control": {"type": "ephemeral"}},
    ]
    bare = {"type": "function", "function": {"name": "now"}}
    assert anthropic_tools([bare]) == [
        {"name": "now", "input_schema": {"type": "object", "properties": {}}}
    ]
    assert anthropic_tool_choice("auto") == {"type": "auto"}
    assert anthropic_tool_choice("required") == {"type": "any"}
    assert anthropic_tool_choice("none") == {"type": "none"}
    assert anthropic_tool_choice({"type": "function", "function": {"name": "run_tests"}}) == {
        "type": "tool",
        "name": "run_tests",
    }
    assert anthropic_tool_choice({"type": "any"}) == {"type": "any"}


def test_anthropic_rejects_arguments_that_are_not_a_json_object() -> None:
    bad = [
        {"role": "user", "content": "go"},
        {
            "role": "assistant",
            "tool_calls": [{**GOOD_CALL, "function": {"name": "f", "arguments": "[1]"}}],
        },
    ]
    with ScriptedServer() as server:
        with pytest.raises(
            InputError, match=r"^messages\[1\]\.tool_calls\[0\]\.function\.arguments"
        ):
            call(endpoint("anthropic", server), bad)
    assert server.requests == []


def test_anthropic_tool_use_answer_comes_back_as_openai_tool_calls() -> None:
    answer = anthropic_message(
        "I'll run the tests.",
        stop_reason="tool_use",
        model="claude-test-20250101",
        id="msg_01XYZ",
        input_tokens=250,
        output_tokens=40,
        tool_uses=[anthropic_tool_use("toolu_1", "run_tests", {"path": "tests/test_dates.py"})],
    )
    with ScriptedServer(Json(answer)) as server:
        done = call(endpoint("anthropic", server), CONVERSATION, tools=TOOLS)
    assert done.text == "I'll run the tests."
    assert done.tool_calls == [
        {
            "id": "toolu_1",
            "type": "function",
            "function": {"name": "run_tests", "arguments": '{"path":"tests/test_dates.py"}'},
        }
    ]
    assert (done.prompt_tokens, done.completion_tokens) == (250, 40)
    assert (done.model, done.request_id) == ("claude-test-20250101", "msg_01XYZ")
    assert done.raw_finish_reason == "tool_use"


def test_anthropic_tool_use_only_answer_is_valid_with_empty_text() -> None:
    answer = anthropic_message(None, stop_reason="tool_use", tool_uses=[anthropic_tool_use()])
    with ScriptedServer(Json(answer)) as server:
        done = call(endpoint("anthropic", server), CONVERSATION)
    assert done.text == "" and done.tool_calls is not None and len(done.tool_calls) == 1


def test_anthropic_request_id_falls_back_to_the_request_id_header() -> None:
    body = anthropic_message("ok")
    del body["id"]
    with ScriptedServer(Json(body, headers={"request-id": "req_011"})) as server:
        assert call(endpoint("anthropic", server), CONVERSATION[:2]).request_id == "req_011"


def test_anthropic_streamed_tool_use_is_assembled() -> None:
    uses = [anthropic_tool_use("toolu_7", "run_tests", {"path": "tests/test_dates.py"})]
    events = anthropic_stream(("Running.",), stop_reason="tool_use", tool_uses=uses, id="msg_s")
    with ScriptedServer(SSE(events, done=False)) as server:
        done = call(endpoint("anthropic", server, stream=True), CONVERSATION, tools=TOOLS)
    assert done.text == "Running."
    assert done.tool_calls == [
        {
            "id": "toolu_7",
            "type": "function",
            "function": {"name": "run_tests", "arguments": '{"path":"tests/test_dates.py"}'},
        }
    ]
    assert done.request_id == "msg_s" and done.ttft_s is not None
    sent = server.requests[0].json()
    assert sent["stream"] is True
    assert {k: v for k, v in sent.items() if k != "stream"} == {
        k: v for k, v in ANTHROPIC_CONVERSATION.items() if k != "tool_choice"
    }


def test_a_tool_call_answer_can_be_sent_back_as_the_next_turn() -> None:
    """The Completion's tool_calls are valid input: the agent loop closes."""
    first = anthropic_message(
        None,
        stop_reason="tool_use",
        tool_uses=[anthropic_tool_use("toolu_1", "run_tests", {"path": "t"})],
    )
    with ScriptedServer(Json(first), Json(anthropic_message("done"))) as server:
        ep = endpoint("anthropic", server)
        done = call(ep, CONVERSATION[:2], tools=TOOLS)
        follow_up = [
            *CONVERSATION[:2],
            {"role": "assistant", "content": done.text or None, "tool_calls": done.tool_calls},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "ok"},
        ]
        assert call(ep, follow_up, tools=TOOLS).text == "done"
    sent = server.requests[1].json()["messages"]
    assert sent[1]["content"] == [
        {"type": "tool_use", "id": "toolu_1", "name": "run_tests", "input": {"path": "t"}}
    ]
    assert sent[2]["content"][0]["tool_use_id"] == "toolu_1"


# -- LiteLLM: passed through in OpenAI format -------------------------------------------------


def test_litellm_passes_tools_through_and_returns_tool_calls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: dict[str, Any] = {}

    async def acompletion(**kwargs: Any) -> Any:
        seen.update(kwargs)
        return {
            "id": "chatcmpl-ll",
            "model": "openai/m",
            "choices": [
                {
                    "finish_reason": "tool_calls",
                    "message": {
                        "content": None,
                        "tool_calls": [
                            {
                                "id": "call_1",
                                "type": "function",
                                "function": {"name": "run_tests", "arguments": '{"path":"t"}'},
                            }
                        ],
                    },
                }
            ],
            "usage": {"prompt_tokens": 9, "completion_tokens": 3},
        }

    module = types.ModuleType("litellm")
    module.acompletion = acompletion  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "litellm", module)
    ep = Endpoint(kind="litellm", base_url="", model="openai/m", api_key_env=KEY_ENV)

    async def go() -> Completion:
        return await LiteLLMProvider(ep).complete(
            CONVERSATION, timeout_s=2, tools=TOOLS, tool_choice="required"
        )

    done = asyncio.run(go())
    assert seen["messages"] is CONVERSATION and seen["tools"] is TOOLS
    assert seen["tool_choice"] == "required"
    assert done.text == "" and done.request_id == "chatcmpl-ll"
    assert done.tool_calls == [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "run_tests", "arguments": '{"path":"t"}'},
        }
    ]
    assert json.loads(done.tool_calls[0]["function"]["arguments"]) == {"path": "t"}


def test_every_provider_class_takes_tools_keywords() -> None:
    import inspect

    for cls in (OpenAIProvider, AnthropicProvider, LiteLLMProvider):
        params = inspect.signature(cls.complete).parameters
        assert {"tools", "tool_choice"} <= set(params)
        assert params["tools"].kind is inspect.Parameter.KEYWORD_ONLY
