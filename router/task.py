"""Tasks and the rule-based task classifier.

A task is one coding call an agent wants made: a single prompt (``payload``) or a
whole agent conversation (``messages``, OpenAI chat format, with ``tools``). It
carries an explicit ``task_type`` or text from which :func:`classify` infers one of
:data:`TASK_TYPES`. Types without a route go to the config's default route.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

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

#: Roles that carry instructions rather than a turn of the conversation.
SYSTEM_ROLES: frozenset[str] = frozenset({"system", "developer"})


@dataclass(slots=True)
class Task:
    """One routed call.

    ``prompt_tokens``/``completion_tokens`` size the call (for token-priced cost
    projection and size-dependent simulated latency). ``spec`` carries what the
    output validators need (a JSON Schema, regex examples, a source file...).

    What is sent: ``messages``, when given, is the conversation in OpenAI chat format
    -- dicts with ``role`` ``system``/``user``/``assistant``/``tool``; ``content`` a
    string or a list of content parts (``{"type": "text", "text": ...}``...); an
    assistant turn may carry ``tool_calls`` (then ``content`` may be ``None``); a
    ``tool`` turn names the call it answers in ``tool_call_id``. Otherwise
    ``payload`` is the shortcut for one user message. ``tools`` (OpenAI function
    tool definitions) and ``tool_choice`` are passed to the provider as they are;
    each provider maps them to its own dialect. The shapes are checked when sent
    (:func:`router.providers._http.check_messages`), not here.

    Fields are only ever added at the end, with defaults: the simulator constructs
    tasks positionally.
    """

    task_id: str
    task_type: str | None = None
    payload: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    arrival_s: float = 0.0
    spec: dict | None = None
    messages: list[dict[str, Any]] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None

    def resolved_type(self) -> str:
        """The explicit type, else the classifier's answer for :meth:`prompt_text`."""
        if self.task_type:
            return self.task_type
        return classify(self.prompt_text())

    def prompt_text(self) -> str:
        """The text the task is about: ``payload``, else the last user message's text.

        A content-parts list contributes its ``text`` parts, joined by newlines;
        ``""`` when there is neither a payload nor a user message with text.
        """
        if self.payload is not None:
            return self.payload
        for message in reversed(self.messages or ()):
            if isinstance(message, dict) and message.get("role") == "user":
                return content_text(message.get("content"))
        return ""

    def chat_messages(self, system_prompt: str | None = None) -> list[dict[str, Any]]:
        """The messages to send for this task, in OpenAI chat format.

        ``messages`` as given (a new list holding the same dicts: nothing is copied
        or rewritten), else ``payload`` (``""`` if unset) as one user message. A
        non-empty ``system_prompt`` is put first only when the conversation has no
        system message of its own: the agent's own instructions win over the
        router's default. (``developer`` is OpenAI's newer name for ``system``.)
        """
        if self.messages is not None:
            chat = list(self.messages)
        else:
            chat = [{"role": "user", "content": self.payload or ""}]
        if system_prompt and not any(
            isinstance(m, dict) and m.get("role") in SYSTEM_ROLES for m in chat
        ):
            chat.insert(0, {"role": "system", "content": system_prompt})
        return chat


def content_text(content: object) -> str:
    """The text of a message's ``content``: the string itself, or the ``text`` of each
    ``{"type": "text"}`` part of a parts list joined by newlines (else ``""``)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part["text"]
            for part in content
            if isinstance(part, dict)
            and part.get("type") == "text"
            and isinstance(part.get("text"), str)
        )
    return ""


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
