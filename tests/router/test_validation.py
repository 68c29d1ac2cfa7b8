"""Tests for router.validation: exact verdicts and reasons for every task type."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.errors import InputError
from router.task import Task
from router.validation import (
    BugPatchValidator,
    PatchError,
    Validation,
    Validator,
    check_spec,
    get_validator,
    register_validator,
    registered_task_types,
    strip_code_fence,
    validate,
    validate_task,
)

OK = Validation(True, "")


def fail(reason: str) -> Validation:
    return Validation(False, reason)


# ---------------------------------------------------------------------------------------
# code fences


@pytest.mark.parametrize(
    ("text", "body"),
    [
        ('```json\n{"a": 1}\n```', '{"a": 1}'),
        ('```\n{"a": 1}\n```\n', '{"a": 1}'),
        ("  \n```python \nx = 1\ny = 2\n```  \n", "x = 1\ny = 2"),
        ("~~~sql\nSELECT 1\n~~~", "SELECT 1"),
        ("```json\n```", ""),
        # A longer fence may contain a shorter one (a diff of a markdown file).
        ("````diff\n+```py\n+x\n+```\n````", "+```py\n+x\n+```"),
    ],
)
def test_strip_code_fence_removes_one_surrounding_fence(text: str, body: str) -> None:
    assert strip_code_fence(text) == body


@pytest.mark.parametrize(
    "text",
    [
        '{"a": 1}',
        'Here you go:\n```json\n{"a": 1}\n```',  # prose before the fence stays
        '```json\n{"a": 1}\n```\nHope this helps',  # ... and after it
        '```json {"a": 1}```',  # no newline after the opening fence
        "```\nx\n~~~",  # mismatched fence characters
    ],
)
def test_strip_code_fence_leaves_anything_else_alone(text: str) -> None:
    assert strip_code_fence(text) == text


def test_fence_is_stripped_only_once() -> None:
    inner = '```json\n{"a": 1}\n```'
    assert strip_code_fence(f"```\n{inner}\n```") == inner
    assert validate("json", f"```\n{inner}\n```") == fail(
        "json: invalid JSON: Expecting value at line 1 column 1"
    )


# ---------------------------------------------------------------------------------------
# json

ITEMS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["items"],
    "properties": {
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id"],
                "properties": {"id": {"type": "integer"}, "tag name": {"type": "string"}},
            },
        }
    },
}


@pytest.mark.parametrize(
    ("output", "spec"),
    [
        ('{"items": [{"id": 1}, {"id": 2, "tag name": "x"}]}', {"schema": ITEMS_SCHEMA}),
        ('```json\n{"items": []}\n```', {"schema": ITEMS_SCHEMA}),
        ("[1, 2.5, null, true]", None),
        ('  "just a string"  \n', {}),
    ],
)
def test_json_passes(output: str, spec: dict[str, Any] | None) -> None:
    assert validate("json", output, spec) == OK


@pytest.mark.parametrize(
    ("output", "spec", "reason"),
    [
        (
            '{"items": [{"id": 1}, {"id": 2}, {"id": "x"}]}',
            {"schema": ITEMS_SCHEMA},
            "json: $.items[2].id: 'x' is not of type 'integer'",
        ),
        (
            '{"items": [{"id": 1, "tag name": 3}]}',
            {"schema": ITEMS_SCHEMA},
            "json: $.items[0][\"tag name\"]: 3 is not of type 'string'",
        ),
        ('{"things": []}', {"schema": ITEMS_SCHEMA}, "json: $: 'items' is a required property"),
        (
            '{"a": 1,}',
            None,
            "json: invalid JSON: Expecting property name enclosed in double "
            "quotes at line 1 column 9",
        ),
        (
            "Sure! Here is the JSON: {}",
            None,
            "json: invalid JSON: Expecting value at line 1 column 1",
        ),
        ("", None, "json: invalid JSON: Expecting value at line 1 column 1"),
        ('{"a": 1} {"b": 2}', None, "json: invalid JSON: Extra data at line 1 column 10"),
        ('{"a": 1, "a": 2}', None, "json: duplicate key 'a'"),
        ('{"x": NaN}', None, "json: NaN is not valid JSON"),
        ("[Infinity]", None, "json: Infinity is not valid JSON"),
    ],
)
def test_json_fails(output: str, spec: dict[str, Any] | None, reason: str) -> None:
    assert validate("json", output, spec) == fail(reason)


def test_json_garbage_that_breaks_the_parser_is_a_failure_not_an_exception() -> None:
    deep = validate("json", "[" * 100_000)
    assert not deep.ok and deep.reason.startswith("json: invalid JSON: RecursionError")
    huge = validate("json", "9" * 5000)
    assert not huge.ok and huge.reason.startswith("json: invalid JSON: ValueError: Exceeds")


def test_json_reason_is_one_line_and_bounded() -> None:
    result = validate("json", '{"items": "' + "x\\n" * 1000 + '"}', {"schema": ITEMS_SCHEMA})
    assert not result.ok
    assert "\n" not in result.reason and len(result.reason) <= 400
    assert result.reason.startswith("json: $.items: 'x\\nx\\n")


def test_json_bad_schema_is_an_input_error() -> None:
    with pytest.raises(InputError, match=r"not a valid JSON Schema: \$.type: 'integr'"):
        validate("json", "{}", {"schema": {"type": "integr"}})
    with pytest.raises(InputError, match="must be a JSON Schema object"):
        validate("json", "{}", {"schema": "object"})


# ---------------------------------------------------------------------------------------
# regex

PHONE = {"matches": ["555-1234", "000-0000"], "rejects": ["5551234", "555-12345", "x555-1234"]}


@pytest.mark.parametrize(
    ("output", "spec"),
    [
        (r"\d{3}-\d{4}", PHONE),
        ("```regex\n[0-9]{3}-[0-9]{4}\n```", PHONE),
        (r"\d{3}", {"mode": "search", "matches": ["a555b"], "rejects": ["55", "a5b"]}),
        (r"^(?P<user>[\w.]+)@(?P<host>[\w.]+)$", None),
        ("abc\n", {}),  # a trailing newline is not part of the pattern
    ],
)
def test_regex_passes(output: str, spec: dict[str, Any] | None) -> None:
    assert validate("regex", output, spec) == OK


@pytest.mark.parametrize(
    ("output", "spec", "reason"),
    [
        ("(a", None, "regex: does not compile: missing ), unterminated subpattern at position 0"),
        ("[z-a]", None, "regex: does not compile: bad character range z-a at position 1"),
        ("", None, "regex: empty pattern"),
        ("\n\n", None, "regex: empty pattern"),
        ("Use this:\n\\d+", None, "regex: output has 2 lines; expected a single pattern"),
        (r"\d{3}-\d+", PHONE, "regex: fullmatches rejects[1]: '555-12345'"),
        (
            r"\d{3}-\d{4}\d?",
            {"matches": ["555-1234"], "rejects": ["555-12345"]},
            "regex: fullmatches rejects[0]: '555-12345'",
        ),
        (r"\d{3}-\d{3}", PHONE, "regex: does not fullmatch matches[0]: '555-1234'"),
        (
            r"\d{3}",
            {"mode": "search", "matches": ["a555b", "ab"]},
            "regex: finds no match in matches[1]: 'ab'",
        ),
        (
            r"\d",
            {"mode": "search", "rejects": ["abc", "ab1"]},
            "regex: finds a match in rejects[1]: 'ab1'",
        ),
        ('r"\\d{3}-\\d{4}"', PHONE, "regex: does not fullmatch matches[0]: '555-1234'"),
    ],
)
def test_regex_fails(output: str, spec: dict[str, Any] | None, reason: str) -> None:
    assert validate("regex", output, spec) == fail(reason)


def test_regex_catastrophic_backtracking_is_cut_off_by_the_timeout() -> None:
    spec = {"matches": ["aaaa"], "rejects": ["a" * 40 + "!"], "timeout_s": 0.5}
    started = time.monotonic()
    result = validate("regex", "(a+)+", spec)
    assert time.monotonic() - started < 5
    assert result == fail(
        "regex: matching the examples took longer than 0.5s (catastrophic backtracking?)"
    )


def test_regex_overlong_pattern_fails_without_compiling() -> None:
    assert validate("regex", "a" * 10_001) == fail(
        "regex: pattern is 10001 characters; the limit is 10000"
    )


def test_regex_examples_with_unicode_round_trip_through_the_worker() -> None:
    assert validate("regex", r"[äöü]+\u2028", {"matches": ["äö\u2028"], "rejects": ["ä"]}) == OK


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"mode": "match"}, "spec['mode'] for task type 'regex' must be 'fullmatch' or 'search'"),
        ({"matches": "abc"}, "spec['matches'] for task type 'regex' must be a list of strings"),
        ({"timeout_s": 0}, "spec['timeout_s'] for task type 'regex' must be a positive number"),
    ],
)
def test_regex_bad_spec_is_an_input_error(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError) as info:
        validate("regex", "a", spec)
    assert str(info.value).startswith(message)


# ---------------------------------------------------------------------------------------
# sql

SCHEMA = """
CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, age INTEGER);
INSERT INTO users VALUES (1, 'ada', 36), (2, 'bob', 17), (3, 'cy', 52);
"""


@pytest.mark.parametrize(
    ("output", "spec"),
    [
        ("SELECT id, name FROM users WHERE age >= 18", None),
        (
            "```sql\nWITH adults AS (SELECT * FROM users WHERE age >= 18)\n"
            "SELECT name FROM adults;\n```",
            {},
        ),
        ("SELECT TOP 5 name FROM users", {"dialect": "tsql"}),
        ("SELECT 1; SELECT 2;", {"allow_multiple": True}),
        (
            "SELECT name, age FROM users WHERE age >= 18",
            {"sqlite_schema": SCHEMA, "expected_rows": [["cy", 52], ["ada", 36]]},
        ),
        (
            "SELECT name FROM users ORDER BY age DESC",
            {"sqlite_schema": SCHEMA, "expected_rows": [["cy"], ["ada"], ["bob"]], "ordered": True},
        ),
        ("SELECT avg(age) FROM users", {"sqlite_schema": SCHEMA, "expected_rows": [[35]]}),
        (
            "INSERT INTO users VALUES (4, 'di', 20); SELECT count(*) FROM users",
            {
                "sqlite_schema": SCHEMA,
                "allow_writes": True,
                "allow_multiple": True,
                "expected_rows": [[4]],
            },
        ),
        ("SELECT name FROM users LIMIT 10", {"dialect": "postgres", "sqlite_schema": SCHEMA}),
    ],
)
def test_sql_passes(output: str, spec: dict[str, Any] | None) -> None:
    assert validate("sql", output, spec) == OK


@pytest.mark.parametrize(
    ("output", "spec", "reason"),
    [
        (
            "SELECT FROM WHERE (",
            None,
            "sql: parse error at line 1, column 17: Expected table name but got 'WHERE'",
        ),
        ("SELECT 'abc", None, "sql: parse error: Error tokenizing 'SELECT 'ab'"),
        ("", None, "sql: no statement"),
        (" ; ", None, "sql: no statement"),
        ("SELECT 1; SELECT 2", None, "sql: 2 statements; expected exactly one"),
        ("hello world", None, "sql: statement 1 is not a query (parsed as Alias)"),
        (
            "DELETE FROM users",
            None,
            "sql: statement 1 writes data (Delete); only read-only queries are allowed",
        ),
        (
            "DROP TABLE users",
            {"sqlite_schema": SCHEMA},
            "sql: statement 1 writes data (Drop); only read-only queries are allowed",
        ),
        (
            "WITH d AS (DELETE FROM users RETURNING *) SELECT * FROM d",
            {"dialect": "postgres"},
            "sql: statement 1 writes data (Select); only read-only queries are allowed",
        ),
        (
            "PRAGMA table_info(users)",
            {"allow_writes": True},
            "sql: statement 1 is not a query or data statement (parsed as Pragma)",
        ),
        (
            "SELECT nme FROM users",
            {"sqlite_schema": SCHEMA},
            "sql: sqlite error: no such column: nme",
        ),
        (
            "SELECT name FROM users WHERE age > 18",
            {"sqlite_schema": SCHEMA, "expected_rows": [["ada"], ["bob"], ["cy"]]},
            "sql: result differs from expected_rows: got 2 rows, expected 3",
        ),
        (
            "SELECT name FROM users WHERE age < 40",
            {"sqlite_schema": SCHEMA, "expected_rows": [["ada"], ["cy"]]},
            "sql: result differs from expected_rows: unexpected row ['bob']",
        ),
        (
            "SELECT name FROM users ORDER BY age",
            {"sqlite_schema": SCHEMA, "expected_rows": [["cy"], ["ada"], ["bob"]], "ordered": True},
            "sql: result differs from expected_rows at row 0: got ['bob'], expected ['cy']",
        ),
        (
            "SELECT id FROM users",
            {"sqlite_schema": SCHEMA, "max_rows": 2},
            "sql: query returned more than 2 rows",
        ),
    ],
)
def test_sql_fails(output: str, spec: dict[str, Any] | None, reason: str) -> None:
    assert validate("sql", output, spec) == fail(reason)


def test_sql_runaway_query_is_interrupted() -> None:
    endless = (
        "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT count(*) FROM n"
    )
    started = time.monotonic()
    result = validate("sql", endless, {"sqlite_schema": SCHEMA, "timeout_s": 0.3})
    assert time.monotonic() - started < 3
    assert result == fail("sql: query ran longer than 0.3s")


def test_sql_attach_is_denied_even_with_writes_allowed(tmp_path: Any) -> None:
    # sqlglot rejects ATTACH before it runs; the authorizer is the second line.
    target = tmp_path / "x.db"
    result = validate(
        "sql", f"ATTACH DATABASE '{target}' AS x", {"sqlite_schema": SCHEMA, "allow_writes": True}
    )
    assert not result.ok
    assert not target.exists()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"dialect": "nosuchdb"}, "spec['dialect'] for task type 'sql': unknown dialect"),
        (
            {"sqlite_schema": "CREATE TABLE (;"},
            "spec['sqlite_schema'] for task type 'sql' does not run",
        ),
        ({"expected_rows": [[1]]}, "spec['expected_rows'] for task type 'sql' needs"),
        (
            {"sqlite_schema": SCHEMA, "expected_rows": [1, 2]},
            "spec['expected_rows'] for task type 'sql' must be a list of rows",
        ),
    ],
)
def test_sql_bad_spec_is_an_input_error(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError) as info:
        validate("sql", "SELECT 1", spec)
    assert str(info.value).startswith(message)


# ---------------------------------------------------------------------------------------
# bug_patch

CALC = "def add(a, b):\n    return a - b\n\n\ndef sub(a, b):\n    return a - b\n"
TEST_CALC = "from calc import add, sub\nassert add(2, 3) == 5\nassert sub(5, 3) == 2\n"
SOURCES = {"calc.py": CALC, "test_calc.py": TEST_CALC}

FIX = """diff --git a/calc.py b/calc.py
index 3b18e51..a9c2f4e 100644
--- a/calc.py
+++ b/calc.py
@@ -1,2 +1,2 @@
 def add(a, b):
-    return a - b
+    return a + b
"""

# Plain `diff -u` style: bare paths with timestamps, a trailing context line.
FIX_PLAIN = (
    "--- calc.py\t2024-05-01 10:00:00\n"
    "+++ calc.py\t2024-05-01 10:01:00\n"
    "@@ -1,3 +1,3 @@\n"
    " def add(a, b):\n"
    "-    return a - b\n"
    "+    return a + b\n"
    " \n"  # the blank third line, as context
)


def _run_tests(*code: str) -> list[str]:
    return [sys.executable, "-c", "\n".join(code)]


@pytest.mark.parametrize(
    ("output", "spec"),
    [
        (FIX, {"source": SOURCES}),
        (f"```diff\n{FIX}```", {"source": SOURCES}),
        (FIX_PLAIN, {"source": SOURCES}),
        (FIX_PLAIN.replace("+    return a + b\n \n", "+    return a + b\n\n"), {"source": SOURCES}),
        (FIX, {"source": CALC}),
        # A hunk whose header line is off is found at its real place (an offset)...
        (FIX.replace("@@ -1,2 +1,2 @@", "@@ -3,2 +3,2 @@"), {"source": SOURCES}),
        # ... new files and deletions.
        (
            "--- /dev/null\n+++ b/pkg/util.py\n@@ -0,0 +1,2 @@\n+X = 1\n+Y = 2\n",
            {"source": SOURCES},
        ),
        (
            "--- a/test_calc.py\n+++ /dev/null\n@@ -1,3 +0,0 @@\n"
            + "".join("-" + line + "\n" for line in TEST_CALC.splitlines()),
            {"source": SOURCES},
        ),
    ],
)
def test_bug_patch_applies(output: str, spec: dict[str, Any]) -> None:
    assert validate("bug_patch", output, spec) == OK


def test_bug_patch_produces_the_patched_tree() -> None:
    two_hunks = FIX + "@@ -5,2 +5,2 @@\n def sub(a, b):\n-    return a - b\n+    return a - b + 0\n"
    tree = BugPatchValidator().apply(two_hunks, {"source": SOURCES})
    assert tree == {
        "calc.py": CALC.replace("return a - b\n\n", "return a + b\n\n", 1).replace(
            "return a - b\n", "return a - b + 0\n"
        ),
        "test_calc.py": TEST_CALC,
    }
    new_file = "--- /dev/null\n+++ b/n.txt\n@@ -0,0 +1 @@\n+tail\n\\ No newline at end of file\n"
    assert BugPatchValidator().apply(new_file, {"source": SOURCES})["n.txt"] == "tail"


@pytest.mark.parametrize(
    ("output", "spec", "reason"),
    [
        # Context that does not match the source: the first differing line is named.
        (
            FIX.replace(" def add(a, b):", " def add(x, y):"),
            {"source": SOURCES},
            "bug_patch: calc.py: hunk 1 does not apply: line 1 is 'def add(a, b):', "
            "hunk expects 'def add(x, y):'",
        ),
        (
            FIX.replace("-    return a - b", "-    return a-b"),
            {"source": SOURCES},
            "bug_patch: calc.py: hunk 1 does not apply: line 2 is '    return a - b', "
            "hunk expects '    return a-b'",
        ),
        (
            FIX.replace("@@ -1,2 +1,2 @@", "@@ -3,2 +3,2 @@"),
            {"source": SOURCES, "allow_offset": False},
            "bug_patch: calc.py: hunk 1 does not apply: line 3 is '', "
            "hunk expects 'def add(a, b):'",
        ),
        # The source's last line has a newline; the hunk says it has none.
        (
            "--- a/calc.py\n+++ b/calc.py\n@@ -6 +6 @@\n-    return a - b\n"
            "\\ No newline at end of file\n+    return a + b\n",
            {"source": SOURCES},
            "bug_patch: calc.py: hunk 1 does not apply: line 6 is '    return a - b', hunk "
            "expects '    return a - b' (no newline at end of file)",
        ),
        (
            "I fixed it:\n" + FIX,
            {"source": SOURCES},
            "bug_patch: line 1: unexpected text outside a hunk: 'I fixed it:'",
        ),
        (
            FIX + "Let me know if you need anything else.\n",
            {"source": SOURCES},
            "bug_patch: line 9: unexpected text outside a hunk: 'Let me know if you need "
            "anything else.'",
        ),
        (
            "def add(a, b):\n    return a + b\n",
            {"source": SOURCES},
            "bug_patch: line 1: unexpected text outside a hunk: 'def add(a, b):'",
        ),
        ("", {"source": SOURCES}, "bug_patch: no unified diff found"),
        (
            FIX.replace("@@ -1,2 +1,2 @@", "@@ -1,3 +1,3 @@"),
            {"source": SOURCES},
            "bug_patch: hunk 1 ends early: 1 old and 1 new lines missing",
        ),
        (
            FIX.replace("@@ -1,2 +1,2 @@", "@@ -1,1 +1,2 @@"),
            {"source": SOURCES},
            "bug_patch: line 7: hunk 1 has more lines than its header says",
        ),
        (
            FIX.replace("@@ -1,2 +1,2 @@", "@@ -1,2 +1,2"),
            {"source": SOURCES},
            "bug_patch: line 5: malformed hunk header '@@ -1,2 +1,2'",
        ),
        (
            FIX.replace("+++ b/calc.py\n", ""),
            {"source": SOURCES},
            "bug_patch: line 3: '--- ' header not followed by '+++ '",
        ),
        (
            FIX.replace("calc.py", "calculator.py"),
            {"source": SOURCES},
            "bug_patch: unknown file 'a/calculator.py' (not in the task's source)",
        ),
        (
            "--- a/calc.py\n+++ b/calc.py\n@@ -1,2 +1,2 @@\n def add(a, b):\n     return a - b\n",
            {"source": SOURCES},
            "bug_patch: patch makes no change",
        ),
        (
            "--- /dev/null\n+++ b/calc.py\n@@ -0,0 +1 @@\n+x\n",
            {"source": SOURCES},
            "bug_patch: calc.py: created by the patch but it already exists",
        ),
        (
            "--- /dev/null\n+++ ../evil.py\n@@ -0,0 +1 @@\n+x\n",
            {"source": SOURCES},
            "bug_patch: unsafe path '../evil.py'",
        ),
        (
            FIX + FIX.split("\n", 2)[2],
            {"source": SOURCES},
            "bug_patch: calc.py is patched by more than one file section",
        ),
        (
            FIX + "--- a/test_calc.py\n+++ b/test_calc.py\n@@ -1 +1 @@\n-x\n+y\n",
            {"source": CALC},
            "bug_patch: 2 file sections; the task has a single file",
        ),
    ],
)
def test_bug_patch_fails(output: str, spec: dict[str, Any], reason: str) -> None:
    assert validate("bug_patch", output, spec) == fail(reason)


def test_bug_patch_apply_raises_patch_error_with_the_bare_reason() -> None:
    with pytest.raises(PatchError) as info:
        BugPatchValidator().apply(
            "--- /dev/null\n+++ b/x\x00.py\n@@ -0,0 +1 @@\n+x\n", {"source": SOURCES}
        )
    assert str(info.value) == "unsafe path 'b/x\\x00.py'"


def test_bug_patch_keeps_crlf_line_endings() -> None:
    crlf = {"w.txt": "one\r\ntwo\r\n"}
    diff = "--- a/w.txt\r\n+++ b/w.txt\r\n@@ -1,2 +1,2 @@\r\n one\r\n-two\r\n+2\r\n"
    assert BugPatchValidator().apply(diff, {"source": crlf}) == {"w.txt": "one\r\n2\r\n"}
    lf_diff = diff.replace("\r\n", "\n")
    assert validate("bug_patch", lf_diff, {"source": crlf}) == fail(
        "bug_patch: w.txt: hunk 1 does not apply: line 1 is 'one\\r', hunk expects 'one'"
    )


def test_bug_patch_test_command_passes_on_a_correct_fix() -> None:
    spec = {"source": SOURCES, "test_command": [sys.executable, "test_calc.py"]}
    assert validate("bug_patch", FIX, spec) == OK


def test_bug_patch_test_command_failure_fails_with_the_last_output_line() -> None:
    wrong = FIX.replace("+    return a + b", "+    return a * b")
    spec = {"source": SOURCES, "test_command": [sys.executable, "test_calc.py"]}
    assert validate("bug_patch", wrong, spec) == fail(
        "bug_patch: test_command exited with status 1: AssertionError"
    )
    spec["test_command"] = _run_tests("import sys", "print('3 failed')", "sys.exit(3)")
    assert validate("bug_patch", FIX, spec) == fail(
        "bug_patch: test_command exited with status 3: 3 failed"
    )


def test_bug_patch_test_command_timeout_fails_and_kills_the_process_group() -> None:
    sleeper = _run_tests(
        "import subprocess, sys, time",
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])",
        "time.sleep(60)",
    )
    spec = {"source": SOURCES, "test_command": sleeper, "timeout_s": 0.5}
    started = time.monotonic()
    assert validate("bug_patch", FIX, spec) == fail("bug_patch: test_command timed out after 0.5s")
    # The grandchild was killed with its group: otherwise this would take a minute.
    assert time.monotonic() - started < 5


def test_bug_patch_test_command_runs_in_the_patched_tree_without_the_router_env(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COSTROUTE_TEST_API_KEY", "sk-do-not-leak")
    probe = _run_tests(
        "import os, pathlib, sys",
        "assert 'COSTROUTE_TEST_API_KEY' not in os.environ, 'leaked'",
        "assert os.environ['EXTRA'] == 'yes'",
        "assert not pathlib.Path('test_calc.py').exists(), 'deleted file still there'",
        "assert pathlib.Path('calc.py').read_text().count('a + b') == 1",
    )
    delete_tests = "--- a/test_calc.py\n+++ /dev/null\n@@ -1,3 +0,0 @@\n" + "".join(
        "-" + line + "\n" for line in TEST_CALC.splitlines()
    )
    spec = {"source": SOURCES, "test_command": probe, "env": {"EXTRA": "yes"}}
    assert validate("bug_patch", FIX + delete_tests, spec) == OK


def test_bug_patch_single_source_is_written_under_spec_path() -> None:
    spec = {
        "source": CALC,
        "path": "calc.py",
        "test_command": _run_tests("import calc", "assert calc.add(2, 2) == 4"),
    }
    assert validate("bug_patch", FIX, spec) == OK


def test_bug_patch_missing_command_is_a_failure() -> None:
    spec = {"source": SOURCES, "test_command": ["/nonexistent/run-tests"]}
    result = validate("bug_patch", FIX, spec)
    assert not result.ok
    assert result.reason.startswith("bug_patch: test_command could not start: [Errno 2]")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"test_command": ["pytest"]},
            "spec['source'] for task type 'bug_patch' must be text or a {path: text} mapping",
        ),
        (
            {"source": {"/etc/passwd": "x"}},
            "spec['source'] for task type 'bug_patch' must be keyed by relative paths",
        ),
        ({"source": {"a.py": 1}}, "spec['source']['a.py'] for task type 'bug_patch' must be text"),
        (
            {"source": CALC, "test_command": "pytest -q"},
            "spec['test_command'] for task type 'bug_patch' must be a non-empty argv list",
        ),
    ],
)
def test_bug_patch_bad_spec_is_an_input_error(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError) as info:
        validate("bug_patch", FIX, spec)
    assert str(info.value).startswith(message)


# ---------------------------------------------------------------------------------------
# error_handling

HANDLER = """\
import json


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return {}
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"bad config {path}") from exc
"""


@pytest.mark.parametrize(
    ("output", "spec"),
    [
        (HANDLER, {"must_handle": ["FileNotFoundError", "json.JSONDecodeError"]}),
        (f"```python\n{HANDLER}```", {"must_handle": ["JSONDecodeError", "UnicodeDecodeError"]}),
        (
            "try:\n    run()\nexcept* (TimeoutError, OSError):\n    pass\n",
            {"must_handle": ["TimeoutError"]},
        ),
        ("x = 1\n", None),
    ],
)
def test_error_handling_passes(output: str, spec: dict[str, Any] | None) -> None:
    assert validate("error_handling", output, spec) == OK


@pytest.mark.parametrize(
    ("output", "spec", "reason"),
    [
        (
            "def f(:\n    pass\n",
            None,
            "error_handling: SyntaxError: invalid syntax (line 1, column 7)",
        ),
        (
            "return 1\n",
            None,
            "error_handling: SyntaxError: 'return' outside function (line 1, column 1)",
        ),
        (
            "Here is the code:\n" + HANDLER,
            None,
            "error_handling: SyntaxError: invalid syntax (line 1, column 13)",
        ),
        ("   \n", None, "error_handling: empty output"),
        (
            "a\x00b",
            None,
            "error_handling: SyntaxError: source code string cannot contain null bytes",
        ),
        (
            HANDLER,
            {"must_handle": ["KeyError", "FileNotFoundError", "PermissionError"]},
            "error_handling: no except clause for KeyError, PermissionError",
        ),
        (
            "try:\n    f()\nexcept Exception:\n    pass\n",
            {"must_handle": ["ValueError"]},
            "error_handling: no except clause for ValueError",
        ),
        (
            "try:\n    f()\nexcept:\n    pass\n",
            {"must_handle": ["ValueError"]},
            "error_handling: no except clause for ValueError",
        ),
    ],
)
def test_error_handling_fails(output: str, spec: dict[str, Any] | None, reason: str) -> None:
    assert validate("error_handling", output, spec) == fail(reason)


# ---------------------------------------------------------------------------------------
# registry, dispatch and the never-raise contract


def test_every_task_type_has_a_validator() -> None:
    assert registered_task_types() == ("bug_patch", "error_handling", "json", "regex", "sql")


def test_unknown_task_type_passes_and_says_so() -> None:
    assert validate("unknown", "anything") == Validation(
        True, "not validated: no validator for task type 'unknown'"
    )


def test_validate_task_uses_the_tasks_type_and_spec() -> None:
    task = Task("t1", task_type="json", spec={"schema": {"type": "array"}})
    assert validate_task(task, "{}") == fail("json: $: {} is not of type 'array'")
    assert validate_task(Task("t2", payload="Write a regex for dates"), "(") == fail(
        "regex: does not compile: missing ), unterminated subpattern at position 0"
    )


def test_non_text_output_fails() -> None:
    assert validate("json", None) == fail("json: output is NoneType, not text")  # type: ignore[arg-type]


def test_spec_must_be_a_mapping() -> None:
    with pytest.raises(InputError, match="spec for task type 'json' must be a mapping"):
        validate("json", "{}", ["schema"])  # type: ignore[arg-type]


class _Shouty(Validator):
    task_type = "shout"

    def check(self, text: str, spec: Mapping[str, Any]) -> Validation:
        if text != text.upper():
            return self.fail("not loud enough")
        if text == "BOOM":
            raise RuntimeError("validator bug")
        return Validation.passed()


def test_register_custom_validator_and_refuse_silent_override() -> None:
    try:
        register_validator(_Shouty())
        assert validate("shout", "HI") == OK
        assert validate("shout", "```\nhi\n```") == fail("shout: not loud enough")
        # A crashing validator fails the answer instead of crashing the router.
        assert validate("shout", "BOOM") == fail(
            "shout: validator error: RuntimeError: validator bug"
        )
        with pytest.raises(InputError, match="already registered"):
            register_validator(_Shouty())
        replacement = _Shouty()
        register_validator(replacement, replace=True)
        assert get_validator("shout") is replacement
    finally:
        from router import validation

        validation._REGISTRY.pop("shout", None)


# ---------------------------------------------------------------------------------------
# check_spec: the spec is judged before any answer exists


@pytest.mark.parametrize(
    ("task_type", "spec", "message"),
    [
        (
            "json",
            {"schema": "object"},
            "spec['schema'] for task type 'json' must be a JSON Schema object, got str 'object'",
        ),
        (
            "json",
            {"schema": {"type": "integr"}},
            "spec['schema'] for task type 'json' is not a valid JSON Schema: $.type: 'integr' "
            "is not valid under any of the given schemas",
        ),
        ("json", ["schema"], "spec for task type 'json' must be a mapping, got list"),
        (
            "regex",
            {"mode": "match"},
            "spec['mode'] for task type 'regex' must be 'fullmatch' or 'search', got str 'match'",
        ),
        (
            "regex",
            {"matches": "abc"},
            "spec['matches'] for task type 'regex' must be a list of strings, got str 'abc'",
        ),
        (
            "regex",
            {"timeout_s": 0},
            "spec['timeout_s'] for task type 'regex' must be a positive number of seconds, "
            "got int '0'",
        ),
        (
            "sql",
            {"dialect": "nosuchdb"},
            "spec['dialect'] for task type 'sql': unknown dialect 'nosuchdb'",
        ),
        (
            "sql",
            {"max_rows": 0},
            "spec['max_rows'] for task type 'sql' must be a positive integer, got int '0'",
        ),
        (
            "sql",
            {"allow_writes": "yes"},
            "spec['allow_writes'] for task type 'sql' must be true or false, got str 'yes'",
        ),
        (
            "sql",
            {"expected_rows": [[1]]},
            "spec['expected_rows'] for task type 'sql' needs spec['sqlite_schema']",
        ),
        (
            "sql",
            {"sqlite_schema": 5},
            "spec['sqlite_schema'] for task type 'sql' must be a string of SQL, got int '5'",
        ),
        (
            "bug_patch",
            {"test_command": ["pytest"]},  # tests to run, but nothing to patch
            "spec['source'] for task type 'bug_patch' must be text or a {path: text} mapping, "
            "got NoneType 'None'",
        ),
        (
            "bug_patch",
            {"source": {"a.py": 1}},
            "spec['source']['a.py'] for task type 'bug_patch' must be text, got int",
        ),
        (
            "bug_patch",
            {"source": CALC, "max_memory_mb": 0},
            "spec['max_memory_mb'] for task type 'bug_patch' must be a positive integer, "
            "got int '0'",
        ),
        (
            "bug_patch",
            {"source": CALC, "test_command": "pytest -q"},
            "spec['test_command'] for task type 'bug_patch' must be a non-empty argv list, "
            "got str 'pytest -q'",
        ),
        (
            "error_handling",
            {"must_handle": "ValueError"},
            "spec['must_handle'] for task type 'error_handling' must be a list of strings, "
            "got str 'ValueError'",
        ),
    ],
)
def test_check_spec_rejects_a_malformed_spec_as_validation_would(
    task_type: str, spec: Any, message: str
) -> None:
    task = Task("t", task_type=task_type, spec=spec)
    with pytest.raises(InputError) as info:
        check_spec(task)
    assert str(info.value) == message
    # The same error validate_task raises -- after a model was paid for.
    with pytest.raises(InputError) as later:
        validate_task(task, "anything")
    assert str(later.value) == message


@pytest.mark.parametrize(
    ("task_type", "spec"),
    [
        ("json", {"schema": ITEMS_SCHEMA, "prompt_hint": "unknown keys are ignored"}),
        ("json", None),
        ("regex", {**PHONE, "mode": "search", "timeout_s": 1}),
        ("regex", None),
        (
            "sql",
            {
                "dialect": "postgres",
                "sqlite_schema": SCHEMA,
                "expected_rows": [["ada"]],
                "ordered": True,
                "max_rows": 5,
            },
        ),
        ("sql", None),
        (
            "bug_patch",
            {
                "source": SOURCES,
                "test_command": ["pytest", "-q"],
                "timeout_s": 30,
                "env": {"CI": "1"},
                "max_memory_mb": 2048,
            },
        ),
        ("bug_patch", {"source": CALC, "path": "calc.py", "allow_offset": False}),
        ("error_handling", {"must_handle": ["KeyError"]}),
        ("error_handling", None),
        ("unknown", {"anything": object()}),  # no validator: nothing to check
        ("no-such-type", ["not even a mapping"]),
    ],
)
def test_check_spec_accepts_a_good_spec(task_type: str, spec: Any) -> None:
    assert check_spec(Task("t", task_type=task_type, spec=spec)) is None


def test_check_spec_uses_the_classified_type() -> None:
    with pytest.raises(InputError) as info:
        check_spec(Task("t", payload="Write a regex for dates", spec={"mode": "match"}))
    assert str(info.value).startswith("spec['mode'] for task type 'regex'")
    check_spec(Task("t", payload="Say hello", spec={"mode": "match"}))  # unknown: passes


def test_check_spec_runs_nothing(tmp_path: Any) -> None:
    # Neither the SQL nor the test command runs: only running them could tell if they
    # work, and check_spec must be cheap and safe on an event loop.
    marker = tmp_path / "ran"
    check_spec(Task("s", task_type="sql", spec={"sqlite_schema": "CREATE TABLE (;"}))
    command = _run_tests(f"import pathlib; pathlib.Path({str(marker)!r}).touch()")
    check_spec(Task("b", task_type="bug_patch", spec={"source": SOURCES, "test_command": command}))
    assert not marker.exists()


# Specs that never start a subprocess or a database, so the fuzzing stays fast.
_FUZZ_SPECS: dict[str, dict[str, Any]] = {
    "json": {"schema": ITEMS_SCHEMA},
    "regex": {},
    "sql": {"allow_multiple": True},
    "bug_patch": {"source": SOURCES},
    "error_handling": {"must_handle": ["ValueError"]},
}

_diffish = st.lists(
    st.sampled_from(
        [
            "--- a/calc.py",
            "+++ b/calc.py",
            "@@ -1,2 +1,2 @@",
            "@@ -0,0 +1 @@",
            " def add(a, b):",
            "-    return a - b",
            "+    return a + b",
            "",
            "\\ No newline at end of file",
            "--- /dev/null",
            "+++ /dev/null",
            "```",
        ]
    ),
    max_size=12,
).map("\n".join)


@settings(max_examples=150, deadline=None)
@given(
    task_type=st.sampled_from(sorted(_FUZZ_SPECS)),
    output=st.one_of(st.text(max_size=200), _diffish),
)
def test_garbage_never_raises(task_type: str, output: str) -> None:
    result = validate(task_type, output, _FUZZ_SPECS[task_type])
    assert isinstance(result, Validation)
    assert "\n" not in result.reason
    assert result.ok or result.reason.startswith(f"{task_type}: ")
    assert not result.reason.startswith(f"{task_type}: validator error")


def test_bug_patch_without_a_source_is_accepted_unvalidated() -> None:
    """An agent's bug fix through the gateway carries no source to apply it to."""
    assert validate("bug_patch", "any answer at all", {}).ok
    assert validate("bug_patch", "any answer at all", None).ok
