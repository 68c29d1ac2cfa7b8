"""The README's commands run as written on a fresh clone.

Every line of every ```bash block is run, in order, with bash, in a scratch copy
of what a clone holds (``traces/``, ``docs/examples/``, and ``.venv`` linked to
this checkout's), and must exit 0. The few that cannot run here are listed in
:data:`SKIPS` with the reason; a skip that no longer matches any README line is
itself an error, so the list cannot rot. Python blocks must at least compile,
and the policy example must print what its comment says.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
SHARED = ROOT.parent / "shared"

#: (pattern of a README command, why it is not run here). Everything else runs.
SKIPS: list[tuple[str, str]] = [
    (r"^python3 -m venv ", "the setup itself: this test runs inside the venv it creates"),
    (r"^\.venv/bin/python -m pytest$", "the whole test suite, of which this test is a part"),
    (r"^(\.venv/bin/)?sim serve\b", "serves until Ctrl-C (tests/sim/test_cli.py runs one)"),
    (r"^(\.venv/bin/)?optimize run ", "a study takes minutes; tests/optimize/ run small ones"),
    (r"^(\.venv/bin/)?optimize (show|export)\b", "reads the study of the skipped `optimize run`"),
]

#: Shell utilities a README line may start with instead of a `.venv/bin/` program.
SHELL_WORDS = ("sed ", "cp ", "mkdir ", "cat ", "python3 -m venv ")


def bash_commands(text: str) -> list[str]:
    """Every command of the ```bash blocks, in order (comments and blank lines dropped)."""
    commands: list[str] = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.M | re.S):
        for line in block.replace("\\\n", " ").splitlines():
            # A trailing comment starts at "  #"; a '#' inside a word (a URL) stays.
            line = re.split(r"\s+#\s", line, maxsplit=1)[0].strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.M | re.S)


COMMANDS = bash_commands(README)


def skip_reason(command: str) -> str | None:
    for pattern, reason in SKIPS:
        if re.search(pattern, command):
            return reason
    if "../shared/" in command and not SHARED.is_dir():
        return f"needs the public data in {SHARED}, absent here"
    return None


def test_the_readme_has_commands_and_every_skip_is_used() -> None:
    assert len(COMMANDS) >= 10
    for pattern, reason in SKIPS:
        assert any(re.search(pattern, c) for c in COMMANDS), f"stale skip {pattern!r} ({reason})"


def test_commands_use_the_venv_consistently() -> None:
    """A fresh clone has no `sim` on PATH: each command names `.venv/bin/` (or is a
    shell utility), so copy-paste works without activating anything."""
    bare = [c for c in COMMANDS if not c.startswith(".venv/bin/") and not c.startswith(SHELL_WORDS)]
    assert bare == [], "prefix these README commands with .venv/bin/: " + "; ".join(bare)


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What a fresh clone's root holds for these commands, and ``../shared`` beside it."""
    base = tmp_path_factory.mktemp("readme")
    root = base / "costroute"
    root.mkdir()
    shutil.copytree(ROOT / "traces", root / "traces")
    shutil.copytree(ROOT / "docs" / "examples", root / "docs" / "examples")
    (root / ".venv").symlink_to(ROOT / ".venv")
    if SHARED.is_dir():
        (base / "shared").symlink_to(SHARED)
    return root


@pytest.mark.parametrize(
    "index", range(len(COMMANDS)), ids=[c.split("#")[0][:60] for c in COMMANDS]
)
def test_readme_command_runs(index: int, clone: Path) -> None:
    command = COMMANDS[index]
    reason = skip_reason(command)
    if reason is not None:
        pytest.skip(reason)
    env = dict(os.environ, MPLBACKEND="Agg", COLUMNS="120")
    env["PATH"] = f"{ROOT / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    res = subprocess.run(
        ["bash", "-c", f"set -euo pipefail; {command}"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert res.returncode == 0, f"{command}\nstdout:\n{res.stdout}\nstderr:\n{res.stderr}"
    if "--json" in command:
        summary = json.loads(res.stdout)
        assert summary["tasks"] > 0
    if command == ".venv/bin/sim replay traces/":
        # The task counts the README shows beside its table (they do not depend on the
        # policy, only on the shipped traces).
        shown = re.search(r"│ tasks +│ +([\d,]+) │", README)
        assert shown is not None
        assert re.search(rf"│ tasks +│ +{shown.group(1)} │", res.stdout), res.stdout
        for name, tasks in re.findall(r"^  (\S+\.parquet): ([\d,]+) tasks", README, flags=re.M):
            assert f"{name}: {tasks} tasks" in res.stdout


def test_what_the_commands_left_behind(clone: Path) -> None:
    """Run last (file order): the outputs the README promises exist, in the right places."""
    if not (clone / "results").exists():
        pytest.skip("the README commands did not run (selected alone)")
    assert (clone / "results" / "summary.json").is_file()
    assert (clone / "results" / ".costroute-output").is_file()
    assert sorted(p.name for p in (clone / "mydir").iterdir()) == [
        "b.yaml",
        "router.yaml",
        "scenario.yaml",
    ]
    # Nothing was written into traces/: later `sim replay traces/` runs stay the README's.
    assert sorted(p.name for p in (clone / "traces").iterdir()) == sorted(
        p.name for p in (ROOT / "traces").iterdir() if p.name != "__pycache__"
    )
    assert sorted(p.name for p in (clone / "mine").iterdir()) == ["azure.parquet", "day.parquet"]


def test_python_blocks_compile() -> None:
    blocks = python_blocks(README)
    assert len(blocks) >= 2
    for i, block in enumerate(blocks):
        ast.parse(block, filename=f"README.md python block {i + 1}")


def test_the_policy_example_prints_what_it_says(tmp_path: Path) -> None:
    block = next(b for b in python_blocks(README) if "drive(" in b)
    claimed = re.search(r"print\(.*\)\s+#\s+(\S+)", block)
    assert claimed is not None
    res = subprocess.run(
        [sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.split()[0] == claimed.group(1)


def test_the_guide_is_linked_and_its_links_resolve() -> None:
    assert "(docs/guide.md)" in README
    docs = ROOT / "docs"
    for page in docs.glob("*.md"):
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            if "://" in target:
                continue
            assert (page.parent / target).exists(), f"{page.name}: broken link {target}"


def test_generated_references_are_up_to_date() -> None:
    res = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "gen_reference.py"), "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stdout + res.stderr


GUIDE = (ROOT / "docs" / "guide.md").read_text(encoding="utf-8")


def test_guide_python_blocks_compile_and_marked_ones_run(tmp_path: Path) -> None:
    blocks = python_blocks(GUIDE)
    assert blocks
    for i, block in enumerate(blocks):
        ast.parse(block, filename=f"docs/guide.md python block {i + 1}")
    runnable = re.findall(r"^<!-- test: run -->\n```python\n(.*?)^```", GUIDE, flags=re.M | re.S)
    assert runnable
    for block in runnable:
        res = subprocess.run(
            [sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True, timeout=60
        )
        assert res.returncode == 0, res.stderr


def test_the_guide_matches_the_code() -> None:
    """Names the guide lists by hand: the task types, aliases, objectives and presets."""
    from optimize.objective import OBJECTIVES, PRESETS
    from router.task import ROUTE_ALIASES, TASK_TYPES

    for task_type in TASK_TYPES:
        assert f"| `{task_type}` | `{ROUTE_ALIASES[task_type]}` |" in GUIDE
    for name in OBJECTIVES:
        assert f"| `{name}`" in GUIDE
    for name, preset in PRESETS.items():
        assert f"| `{name}` | `{preset.objective.name}` |" in GUIDE
