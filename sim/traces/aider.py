"""Import an Aider leaderboard (Aider-AI/aider, ``aider/website/_data/*.yml``, Apache-2.0)
as a simulator scenario and a router model catalog.

Each leaderboard entry is one benchmark run of one model: ``test_cases`` coding
exercises, each tried once and, if its tests failed, once more with the test output
(``pass_rate_1`` / ``pass_rate_2``: percent of cases passed after the first / second
try). Per entry the importer derives (one *answer* is one model response):

======================= ===============================================================
figure                  derivation
======================= ===============================================================
answers per run         ``test_cases * (2 - pass_rate_1/100) + num_malformed_responses``
                        (one answer per case, a second for each case failed on the
                        first try, one more per malformed answer: aider re-asks)
completion              ``pass_rate_1 / 100`` (``pass_rate=2``: ``pass_rate_2 / 100``):
                        the share of answers that complete a task, the scenario's
                        ``completion.default`` and the catalog's ``completion_rate``
retry success           ``(pass_rate_2 - pass_rate_1) / (100 - pass_rate_1)``: how often
                        a second try passes a case the first try failed, against
                        ``pass_rate_1 / 100`` if tries were independent (aider's second
                        try sees the test errors, so it is an upper bound for a blind
                        retry); ``retry_benefit_pp = pass_rate_2 - pass_rate_1``.
                        Written as a comment per model (the scenario schema has no
                        field for it yet) and returned in :class:`AiderModel`
malformed_rate          ``num_malformed_responses / answers``; without that count,
                        ``(1 - percent_cases_well_formed/100) * test_cases / answers``
                        (a lower bound: at least one malformed answer per such case);
                        capped at ``1 - completion`` (the scenario requires it)
server_error_rate       ``e / (answers + e)`` with ``e = error_outputs -
                        num_malformed_responses`` (at least 0): errors other than
                        edit-format failures (API errors, timeouts) are calls that
                        got no answer, on top of the answers; 0 without
                        ``error_outputs``. (The seed scenario's ``e / answers`` is the
                        same for small ``e``; this one stays below 1 for runs whose
                        API failed more often than it answered.)
latency                 lognormal, ``mean_s = seconds_per_case * test_cases / answers``
                        (seconds per answer, test runs included) and ``sigma``
                        (default 0.0911: the llmperf-leaderboard tail shape the seed
                        scenario documents; the leaderboard has no spread)
cost                    ``total_cost / answers`` USD per answer (``cost_per_task`` in
                        both files); an entry without ``total_cost`` is skipped
======================= ===============================================================

Model ids are the leaderboard names made safe (lower case; letters, digits, ``.``,
``_`` and ``-``) and unique (a repeated name gets its edit format, then a counter,
appended). The provider is the LiteLLM prefix of the run's ``--model`` (``gemini/...``
-> ``gemini``), else guessed from the name (``claude`` -> ``anthropic``...), else
``unknown``. Names saying ``preview``, ``exp``, ``alpha`` or ``beta`` are catalogued
with ``status: preview`` (the router keeps those out of production).

The catalog has one route, ``default``: the ``chain_length`` stable models with the
highest completion (cheaper first on ties), ``attempts_per_model`` each, with limits
that filter nothing (the chain's summed per-answer cost and 3x its summed latency,
times the attempts). It is a starting point for ``optimize run``, not a tuned config.
Both outputs are validated by loading them with the scenario and config loaders.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Literal

import yaml

from router.config import RouterConfig, config_from_dict
from router.errors import InputError
from sim.errors import TraceError
from sim.traces._common import write_atomically
from sim.world.scenario import Scenario, parse_scenario

__all__ = [
    "AIDER_REQUIRED",
    "DEFAULT_LATENCY_SIGMA",
    "AiderImport",
    "AiderModel",
    "check_aider_outputs",
    "import_aider",
    "write_aider",
]

#: Fields every leaderboard entry must have.
AIDER_REQUIRED: tuple[str, ...] = (
    "model",
    "test_cases",
    "pass_rate_1",
    "pass_rate_2",
    "seconds_per_case",
)

#: The lognormal latency shape used when the leaderboard gives none (see the module doc).
DEFAULT_LATENCY_SIGMA = 0.0911

_PREVIEW = re.compile(r"(?<![a-z])(preview|exp|experimental|alpha|beta)(?![a-z])", re.IGNORECASE)

# Name fragments -> provider, for runs whose --model has no LiteLLM prefix.
_PROVIDER_HINTS: tuple[tuple[str, str], ...] = (
    ("claude", "anthropic"),
    ("sonnet", "anthropic"),
    ("opus", "anthropic"),
    ("haiku", "anthropic"),
    ("gpt", "openai"),
    ("o1", "openai"),
    ("o3", "openai"),
    ("o4", "openai"),
    ("gemini", "gemini"),
    ("gemma", "gemini"),
    ("deepseek", "deepseek"),
    ("grok", "xai"),
    ("mistral", "mistral"),
    ("codestral", "mistral"),
    ("qwen", "alibaba"),
    ("qwq", "alibaba"),
    ("llama", "meta"),
    ("command", "cohere"),
)


@dataclass(frozen=True, slots=True)
class AiderModel:
    """One imported leaderboard entry and every figure derived from it.

    Rates are fractions (0..1) except the ``pass_rate_*`` and ``retry_benefit_pp``,
    which keep the leaderboard's percent units. ``retry_success`` is the
    conditional second-try pass rate (None when the first try passed every case).
    """

    id: str
    name: str
    row: int
    provider: str
    status: Literal["stable", "preview"]
    edit_format: str | None
    date: str | None
    test_cases: int
    pass_rate_1: float
    pass_rate_2: float
    completion: float
    retry_success: float | None
    retry_benefit_pp: float
    answers: float
    malformed_rate: float
    server_error_rate: float
    seconds_per_case: float
    latency_mean_s: float
    total_cost: float
    cost_per_case: float
    cost_per_answer: float


@dataclass(frozen=True, slots=True)
class AiderImport:
    """What :func:`import_aider` made: the models, the entries it skipped
    (``(row, name, reason)``), both validated objects and their YAML texts."""

    source: str
    models: list[AiderModel]
    skipped: list[tuple[int, str, str]]
    scenario: Scenario
    config: RouterConfig
    scenario_yaml: str
    config_yaml: str
    chain: list[str] = field(default_factory=list)


def _bad(path: Path, row: int, name: str, expected: str, value: object) -> TraceError:
    shown = repr(value) if not isinstance(value, str) else f"'{value[:60]}'"
    return TraceError(f"{path}: entry {row}, field '{name}': expected {expected}, got {shown}")


def _num(
    path: Path,
    row: int,
    entry: dict[str, Any],
    name: str,
    *,
    lo: float = 0.0,
    hi: float | None = None,
    positive: bool = False,
    required: bool = True,
) -> float | None:
    if name not in entry or entry[name] is None:
        if required:
            raise TraceError(f"{path}: entry {row}: missing field '{name}'")
        return None
    value = entry[name]
    ok = (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= lo
        and (hi is None or value <= hi)
        and (not positive or value > 0)
    )
    if not ok:
        bounds = f"a number > {lo:g}" if positive else f"a number >= {lo:g}"
        if hi is not None:
            bounds = f"a number in [{lo:g}, {hi:g}]"
        raise _bad(path, row, name, bounds, value)
    return float(value)


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9._-]+", "-", text.lower())
    slug = re.sub(r"-{2,}", "-", slug).strip("-._")
    return slug or "model"


def _provider(entry: dict[str, Any], name: str) -> str:
    command = entry.get("command")
    if isinstance(command, str):
        match = re.search(r"--model\s+(\S+)", command)
        if match and "/" in match.group(1):
            return _slug(match.group(1).split("/", 1)[0])
    lowered = name.lower()
    for hint, provider in _PROVIDER_HINTS:
        if re.search(rf"(?<![a-z]){re.escape(hint)}", lowered):
            return provider
    return "unknown"


def _text(value: object) -> str | None:
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _load(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        state = "is not a file" if path.exists() else "does not exist"
        raise TraceError(f"{path}: Aider leaderboard file {state}")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise TraceError(
            f"{path}: invalid YAML{where}: {exc.problem or exc.context or 'syntax error'}"
        ) from None
    except yaml.YAMLError as exc:
        raise TraceError(f"{path}: invalid YAML: {str(exc).splitlines()[0]}") from None
    except UnicodeDecodeError as exc:
        raise TraceError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise TraceError(f"{path}: cannot read file ({exc.strerror or exc})") from None
    if not isinstance(doc, list) or not doc:
        got = "an empty list" if isinstance(doc, list) else type(doc).__name__
        raise TraceError(f"{path}: expected a YAML list of leaderboard entries, got {got}")
    for row, entry in enumerate(doc, start=1):
        if not isinstance(entry, dict):
            raise TraceError(
                f"{path}: entry {row}: expected a mapping of fields, got {type(entry).__name__}"
            )
    return doc


def _model_of(
    path: Path, row: int, entry: dict[str, Any], pass_rate: int
) -> AiderModel | tuple[int, str, str]:
    """The model of one entry, or ``(row, name, reason)`` when it must be skipped."""
    name = entry.get("model")
    if name is None:
        raise TraceError(f"{path}: entry {row}: missing field 'model'")
    if not isinstance(name, str | int | float) or isinstance(name, bool) or not str(name).strip():
        raise _bad(path, row, "model", "a non-empty model name", name)
    name = str(name).strip()
    cases_f = _num(path, row, entry, "test_cases", lo=1)
    assert cases_f is not None
    if cases_f != int(cases_f):
        raise _bad(path, row, "test_cases", "an integer >= 1", entry["test_cases"])
    cases = int(cases_f)
    pr1 = _num(path, row, entry, "pass_rate_1", hi=100.0)
    pr2 = _num(path, row, entry, "pass_rate_2", hi=100.0)
    spc = _num(path, row, entry, "seconds_per_case", positive=True)
    assert pr1 is not None and pr2 is not None and spc is not None
    malformed_n = _num(path, row, entry, "num_malformed_responses", required=False)
    errors_n = _num(path, row, entry, "error_outputs", required=False)
    well_formed = _num(path, row, entry, "percent_cases_well_formed", hi=100.0, required=False)
    total_cost = _num(path, row, entry, "total_cost", required=False)
    if total_cost is None:
        return (row, name, "no total_cost (the scenario needs a price)")

    answers = cases * (2.0 - pr1 / 100.0) + (malformed_n or 0.0)
    completion = (pr1 if pass_rate == 1 else pr2) / 100.0
    if malformed_n is not None:
        malformed = malformed_n / answers
    elif well_formed is not None:
        malformed = (1.0 - well_formed / 100.0) * cases / answers
    else:
        malformed = 0.0
    malformed = min(malformed, 1.0 - completion)
    server = 0.0
    if errors_n is not None:
        failed = max(0.0, errors_n - (malformed_n or 0.0))  # requests that got no answer
        server = failed / (answers + failed)
    retry_success = None if pr1 >= 100.0 else max(0.0, pr2 - pr1) / (100.0 - pr1)
    return AiderModel(
        id=_slug(name),
        name=name,
        row=row,
        provider=_provider(entry, name),
        status="preview" if _PREVIEW.search(name) else "stable",
        edit_format=_text(entry.get("edit_format")),
        date=_text(entry.get("date")),
        test_cases=cases,
        pass_rate_1=pr1,
        pass_rate_2=pr2,
        completion=round(completion, 6),
        retry_success=None if retry_success is None else round(retry_success, 6),
        retry_benefit_pp=round(pr2 - pr1, 6),
        answers=answers,
        malformed_rate=round(malformed, 6),
        server_error_rate=round(server, 6),
        seconds_per_case=spc,
        latency_mean_s=round(spc * cases / answers, 6),
        total_cost=total_cost,
        cost_per_case=total_cost / cases,
        cost_per_answer=round(total_cost / answers, 9),
    )


def _unique_ids(models: list[AiderModel]) -> list[AiderModel]:
    taken: set[str] = set()
    out: list[AiderModel] = []
    for m in models:
        candidate = m.id
        if candidate in taken and m.edit_format:
            candidate = f"{m.id}-{_slug(m.edit_format)}"
        base, n = candidate, 2
        while candidate in taken:
            candidate = f"{base}-{n}"
            n += 1
        taken.add(candidate)
        out.append(m if candidate == m.id else _replace_id(m, candidate))
    return out


def _replace_id(m: AiderModel, new_id: str) -> AiderModel:
    from dataclasses import replace

    return replace(m, id=new_id)


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _scenario_yaml(source: str, models: list[AiderModel], sigma: float, pass_rate: int) -> str:
    lines = [
        f"# Scenario imported by `sim import-aider` from {source}",
        "# (Aider-AI/aider leaderboard data, Apache-2.0; see sim/traces/aider.py for every",
        "# derivation). Per model: completion = pass_rate_"
        f"{pass_rate} / 100; latency mean = seconds per answer,",
        f"# sigma {sigma:g} (an assumption: the leaderboard has no spread); malformed and",
        "# server-error rates per answer; cost_per_task = total_cost per answer. No outage,",
        "# capacity or rate limit: the leaderboard says nothing about them.",
        "# retry: a same-model retry correlation is not in the scenario schema yet; each",
        "# model's comment gives the conditional second-try pass rate (aider's second try",
        "# sees the test output, so it bounds a blind retry from above).",
    ]
    head = {
        "name": _slug(Path(source).stem),
        "description": f"Imported from the Aider leaderboard {Path(source).name}.",
    }
    lines.append(yaml.safe_dump(head, sort_keys=False, width=88).rstrip())
    lines.append("models:")
    for m in models:
        spec: dict[str, Any] = {
            "provider": m.provider,
            "completion": {"default": m.completion},
            "latency": {"mean_s": m.latency_mean_s, "sigma": sigma},
            "malformed_rate": m.malformed_rate,
            "server_error_rate": m.server_error_rate,
            "cost_per_task": m.cost_per_answer,
        }
        block = yaml.safe_dump({m.id: spec}, sort_keys=False, default_flow_style=False)
        first, _, rest = block.partition("\n")
        lines.append("  " + first)
        what = ", ".join(x for x in (m.edit_format, m.date) if x)
        lines.append(f"    # entry {m.row}: {m.name!r} ({what}; {m.test_cases} cases)")
        if m.retry_success is None:
            lines.append(f"    # retry: pass_rate_1 {m.pass_rate_1:g} %: no first-try failure")
        else:
            lines.append(
                f"    # retry: pass_rate_1 {m.pass_rate_1:g} % -> pass_rate_2 "
                f"{m.pass_rate_2:g} % (+{m.retry_benefit_pp:g} pp); a second try passes "
                f"{_fmt(m.retry_success)} of first-try failures"
            )
        lines.append(
            f"    # per answer ({_fmt(m.answers)} answers): {m.seconds_per_case:g} s/case, "
            f"${_fmt(m.cost_per_case)}/case"
        )
        lines.extend("  " + ln for ln in rest.rstrip().splitlines())
    return "\n".join(lines) + "\n"


def _config_yaml(
    source: str, models: list[AiderModel], chain: list[str], attempts: int, pass_rate: int
) -> tuple[str, dict[str, Any]]:
    by_id = {m.id: m for m in models}
    cost = attempts * sum(by_id[c].cost_per_answer for c in chain)
    latency_ms = 3 * attempts * sum(by_id[c].latency_mean_s for c in chain) * 1000.0
    data: dict[str, Any] = {
        "version": 1,
        "models": [
            {
                "id": m.id,
                "provider": m.provider,
                "completion_rate": m.completion,
                "cost_per_task": m.cost_per_answer,
                "avg_latency_ms": round(m.latency_mean_s * 1000.0, 3),
                "status": m.status,
                "note": (
                    f"aider {Path(source).name} entry {m.row} {m.name!r}: pass_rate_1 "
                    f"{m.pass_rate_1:g}, pass_rate_2 {m.pass_rate_2:g}"
                    + (
                        ""
                        if m.retry_success is None
                        else f", second-try pass {_fmt(m.retry_success)}"
                    )
                    + f"; ${_fmt(m.cost_per_case)}/case, {m.seconds_per_case:g} s/case"
                ),
            }
            for m in models
        ],
        "routes": {
            "default": {
                "chain": chain,
                "max_cost_per_task": max(round(cost, 6), 1e-6),
                "max_latency_ms": max(round(latency_ms, 1), 1.0),
                "attempts_per_model": attempts,
            }
        },
        "default_route": "default",
    }
    header = [
        f"# Router catalog imported by `sim import-aider` from {source}",
        "# (Aider-AI/aider leaderboard data, Apache-2.0). cost_per_task and avg_latency_ms",
        f"# are per answer; completion_rate is pass_rate_{pass_rate} / 100. The default route",
        "# is a starting point (top models by completion); tune it with `optimize run`.",
    ]
    body = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)
    return "\n".join(header) + "\n" + body, data


def import_aider(
    path: str | os.PathLike[str],
    *,
    pass_rate: int = 1,
    latency_sigma: float = DEFAULT_LATENCY_SIGMA,
    chain_length: int = 3,
    attempts_per_model: int = 2,
) -> AiderImport:
    """Read an Aider leaderboard YAML and derive a scenario and a router catalog.

    Nothing is written (see :func:`write_aider`). ``pass_rate`` (1 or 2) picks which
    pass rate is the completion probability; ``latency_sigma`` is the lognormal
    shape; ``chain_length``/``attempts_per_model`` shape the default route. See the
    module docstring for every derivation. Entries without ``total_cost`` are
    skipped (listed in :attr:`AiderImport.skipped`). Raises :class:`TraceError`
    naming the file, the 1-based entry and the field for a missing or unreadable
    file, invalid YAML, a missing required field or a value out of range (and when no
    entry is left); :class:`~router.errors.InputError` for a bad argument. Both
    results are validated with the scenario and config loaders.
    """
    if pass_rate not in (1, 2) or isinstance(pass_rate, bool):
        raise InputError(f"pass_rate: expected 1 or 2, got {pass_rate!r}")
    if not (
        isinstance(latency_sigma, int | float)
        and math.isfinite(latency_sigma)
        and latency_sigma > 0
    ):
        raise InputError(f"latency_sigma: expected a positive number, got {latency_sigma!r}")
    if isinstance(chain_length, bool) or not isinstance(chain_length, int) or chain_length < 1:
        raise InputError(f"chain_length: expected an integer >= 1, got {chain_length!r}")
    if (
        isinstance(attempts_per_model, bool)
        or not isinstance(attempts_per_model, int)
        or not 1 <= attempts_per_model <= 10
    ):
        raise InputError(
            f"attempts_per_model: expected an integer in 1..10, got {attempts_per_model!r}"
        )
    src_path = Path(path)
    source = str(src_path)
    entries = _load(src_path)
    models: list[AiderModel] = []
    skipped: list[tuple[int, str, str]] = []
    for row, entry in enumerate(entries, start=1):
        got = _model_of(src_path, row, entry, pass_rate)
        if isinstance(got, AiderModel):
            models.append(got)
        else:
            skipped.append(got)
    if not models:
        raise TraceError(f"{src_path}: no usable leaderboard entry (all {len(entries)} skipped)")
    models = _unique_ids(models)

    stable = [m for m in models if m.status == "stable"] or models
    ranked = sorted(stable, key=lambda m: (-m.completion, m.cost_per_answer, m.row))
    chain = [m.id for m in ranked[:chain_length]]

    scenario_text = _scenario_yaml(source, models, float(latency_sigma), pass_rate)
    scenario = parse_scenario(yaml.safe_load(scenario_text), f"scenario from {source}")
    config_text, _ = _config_yaml(source, models, chain, attempts_per_model, pass_rate)
    config = config_from_dict(yaml.safe_load(config_text), f"catalog from {source}")
    return AiderImport(
        source=source,
        models=models,
        skipped=skipped,
        scenario=scenario,
        config=config,
        scenario_yaml=scenario_text,
        config_yaml=config_text,
        chain=chain,
    )


def check_aider_outputs(
    scenario_path: str | os.PathLike[str], catalog_path: str | os.PathLike[str]
) -> tuple[Path, Path]:
    """The two output paths, if both end in ``.yaml``/``.yml`` and differ; else
    :class:`InputError` naming the flag (``--scenario``/``--catalog``)."""
    scn, cat = Path(scenario_path), Path(catalog_path)
    for flag, p in (("--scenario", scn), ("--catalog", cat)):
        if p.suffix.lower() not in (".yaml", ".yml"):
            raise InputError(f"{flag}: {p}: expected a .yaml or .yml file")
    if scn.resolve() == cat.resolve():
        raise InputError(f"--catalog: {cat}: the same file as --scenario")
    return scn, cat


def write_aider(
    result: AiderImport,
    scenario_path: str | os.PathLike[str],
    catalog_path: str | os.PathLike[str],
) -> tuple[Path, Path]:
    """Write both YAML texts of ``result``, all or nothing (temp files, then renames).

    Both paths must end in ``.yaml``/``.yml`` and differ (:class:`InputError`
    otherwise, before anything is written); OS errors propagate as
    :class:`OSError` with no output touched.
    """
    scn, cat = check_aider_outputs(scenario_path, catalog_path)
    write_atomically(
        [
            (scn, lambda tmp: tmp.write_text(result.scenario_yaml, encoding="utf-8")),
            (cat, lambda tmp: tmp.write_text(result.config_yaml, encoding="utf-8")),
        ]
    )
    return scn, cat
