"""The rule-based classifier, on real-looking agent prompts of each type."""

from __future__ import annotations

import pytest

from router import UNKNOWN, RoutingPolicy, Task, classify, load_seed_config

EXAMPLES = {
    "regex": [
        "Write a regex that matches ISO-8601 dates like 2024-01-31.",
        "Give me a regular expression for US phone numbers.",
    ],
    "sql": [
        "Write a SQL query returning the ten customers with the highest total order value.",
        "SELECT name FROM users WHERE ... finish this so it also returns emails",
    ],
    "json": [
        "Parse this JSON payload and return only the `items` array.",
        '{"user": {"id": 7, "tags": ["a"]}} -> extract the user id',
    ],
    "bug_patch": [
        "Fix the bug in parse_header(): it crashes on empty input. Reply with a unified diff.",
        "--- a/app.py\n+++ b/app.py\n@@ -1,3 +1,3 @@\n-x = 1\n+x = 2\n",
    ],
    "error_handling": [
        "Add error handling around the HTTP call so timeouts are retried.",
        "Wrap this file read in try/except and raise a clear exception if it is missing.",
    ],
}


@pytest.mark.parametrize(
    ("expected", "payload"), [(k, p) for k, ps in EXAMPLES.items() for p in ps]
)
def test_classify_examples(expected: str, payload: str) -> None:
    assert classify(payload) == expected


def test_unknown_payload_goes_to_default_route() -> None:
    assert classify("Write a haiku about autumn.") == UNKNOWN
    policy = RoutingPolicy(load_seed_config())
    run = policy.start(Task("t", payload="Write a haiku about autumn."), 0.0)
    assert (run.task_type, run.plan.name) == (UNKNOWN, "default")


def test_explicit_type_wins_over_payload() -> None:
    assert Task("t", "sql", payload="write a regex").resolved_type() == "sql"
    assert Task("t", None, payload="write a regex").resolved_type() == "regex"
