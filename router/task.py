"""Tasks and the rule-based task classifier.

A task is one small coding call an agent wants made. It carries an explicit
``task_type`` or a payload from which :func:`classify` infers one of
:data:`TASK_TYPES`. Types without a route go to the config's default route.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: The canonical task types. Routes may be keyed by these or by the article's
#: longer names (``regex_generation``, ``sql_query``, ``json_parse``); see
#: :data:`ROUTE_ALIASES`.
TASK_TYPES: tuple[str, ...] = ("regex", "sql", "json", "bug_patch", "error_handling")

#: Canonical type -> the route name used by the source article's config template.
ROUTE_ALIASES: dict[str, str] = {
    "regex": "regex_generation",
    "sql": "sql_query",
    "json": "json_parse",
    "bug_patch": "bug_patch",
    "error_handling": "error_handling",
}


@dataclass(slots=True)
class Task:
    """One routed call.

    ``prompt_tokens``/``completion_tokens`` size the call (for token-priced cost
    projection and size-dependent simulated latency). ``spec`` carries what the
    output validators need (a JSON Schema, regex examples, a source file...).
    """

    task_id: str
    task_type: str | None = None
    payload: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    arrival_s: float = 0.0
    spec: dict | None = None

    def resolved_type(self) -> str:
        """The explicit type, else the classifier's answer for the payload."""
        if self.task_type:
            return self.task_type
        return classify(self.payload or "")


# The rules are checked in order; the first that matches wins. They look for what an
# agent's prompt for each kind of task almost always says, so they are cheap and
# predictable; anything else is "unknown" and takes the default route.
_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "bug_patch",
        re.compile(
            r"(^|\n)(---|\+\+\+|@@) |\bunified diff\b|\bpatch\b|\bfix (the|this) bug\b|"
            r"\bfailing test\b|\bbug\b",
            re.I,
        ),
    ),
    (
        "error_handling",
        re.compile(
            r"\btry\s*/\s*except\b|\btry[- ]except\b|\berror handling\b|\bexception\b|"
            r"\btraceback\b|\braise\b|\bretry logic\b",
            re.I,
        ),
    ),
    (
        "sql",
        re.compile(
            r"\bsql\b|\bselect\b[\s\S]+\bfrom\b|\bjoin\b|\bgroup by\b|\bwhere clause\b|"
            r"\bquery (the|a) (table|database)\b|\bpostgres|\bsqlite\b",
            re.I,
        ),
    ),
    (
        "regex",
        re.compile(
            r"\bregex\b|\bregular expression\b|\bpattern that matches\b|\bre\.compile\b", re.I
        ),
    ),
    (
        "json",
        re.compile(
            r"\bjson\b|\bjson schema\b|\bparse (this|the) (object|payload)\b|^\s*[{\[]", re.I
        ),
    ),
)

UNKNOWN = "unknown"


def classify(payload: str) -> str:
    """Assign a task type to a payload by ordered keyword rules.

    Order matters and is deliberate: a prompt that asks to fix a bug in a SQL
    query is a ``bug_patch`` (it needs a diff), and a prompt about handling a
    JSON decode exception is ``error_handling``. Returns :data:`UNKNOWN` when no
    rule matches.
    """
    for name, pattern in _RULES:
        if pattern.search(payload):
            return name
    return UNKNOWN
