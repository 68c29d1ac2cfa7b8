"""The report of a calibration (``sim calibrate --report DIR``): Markdown, PNGs, HTML.

:func:`write_report` writes into ``DIR`` (atomically, :mod:`sim.engine.outdir`: a new, empty
or earlier report directory only):

* ``report.md``: what was read, the difficulty fit with the per-position check, a
  table per model (every fitted number with its n, 95% CI and goodness of fit) and
  the outage episodes;
* ``latency_<model>.png``: the fitted base latency's CDF over the data's
  (Kaplan-Meier, so timeouts count as censored) and a QQ plot;
* ``completion.png``: completion per model and task type with 95% CIs;
* ``outages.png``: per provider, every call on the time axis (answers grey,
  availability failures red) and the detected outage episodes;
* ``report.html`` (``html=True``): the same page as HTML, figures linked.

Figures use matplotlib's Agg backend and fixed metadata, so the same calibration gives
the same files.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from sim.engine.outdir import output_dir  # noqa: E402
from sim.world.calibration import Estimate, _km, _num  # noqa: E402

if TYPE_CHECKING:
    from sim.world.calibration import Calibration, LatencyFit, OutageFit

__all__ = ["write_report"]

_META = {"Software": None}  # no version string: files are byte-identical across runs


def _save(fig: plt.Figure, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata=_META)
    plt.close(fig)


def _safe(name: str) -> str:
    """A model id as a file-name part."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def _ci(est: Estimate | None) -> str:
    if est is None or est.ci is None:
        return ""
    return f"[{_num(est.ci[0])}, {_num(est.ci[1])}]"


def _row(name: str, est: Estimate | None, value: str | None = None) -> str:
    if est is None:
        return f"| {name} | {value or 'none'} | | | |"
    shown = value if value is not None else _num(est.value)
    return f"| {name} | {shown} | {est.n:,} | {_ci(est)} | {est.note} |"


# -------------------------------------------------------------------------- figures
def _latency_figure(model: str, fit: LatencyFit, path: Path) -> None:
    """CDF of the fit over the Kaplan-Meier CDF of the data, and a QQ plot."""
    x, cens = fit.base, fit.censored
    t, f_km = _km(x, cens)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.step(t, f_km, where="post", color="k", lw=1.2, label="data (Kaplan-Meier)")
    lo, hi = max(float(x.min()), 1e-4), float(x.max())
    grid = np.geomspace(lo, hi * 1.2, 400)
    ax1.plot(grid, fit.cdf(grid), color="C1", lw=1.5, label=f"fit: {fit.family}")
    ax1.set_xscale("log")
    ax1.set(
        xlabel="base latency (s): latency minus the token terms",
        ylabel="CDF",
        title=f"{model}: n={fit.n:,}" + (f", {fit.n_censored} censored" if fit.n_censored else ""),
    )
    ax1.legend(loc="lower right")
    # QQ: each exact value against the fitted quantile at its Kaplan-Meier probability.
    p = np.clip((np.concatenate(([0.0], f_km[:-1])) + f_km) / 2, 1e-6, 1 - 1e-6)
    q = fit.ppf(p)
    ax2.scatter(q, t, s=6, color="C0", alpha=0.6)
    both = np.concatenate((q, t))
    both = both[np.isfinite(both) & (both > 0)]
    if both.size:
        a, b = float(both.min()), float(both.max())
        ax2.plot([a, b], [a, b], color="k", lw=0.8)
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set(xlabel="fitted quantile (s)", ylabel="observed (s)", title=f"QQ: {fit.gof()}")
    ax2.title.set_fontsize(9)
    _save(fig, path)


def _completion_figure(cal: Calibration, path: Path) -> None:
    comp = cal.completion
    assert comp is not None
    items = sorted(comp.p.items())
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.32 * len(items) + 1)))
    ys = np.arange(len(items))[::-1]
    models = sorted({m for (m, _), _ in items})
    colors = {m: f"C{i % 10}" for i, m in enumerate(models)}
    for y, ((m, _), est) in zip(ys, items, strict=True):
        lo, hi = est.ci if est.ci is not None else (est.value, est.value)
        ax.errorbar(
            est.value,
            y,
            xerr=[[est.value - lo], [hi - est.value]],
            fmt="o",
            color=colors[m],
            capsize=3,
        )
    ax.set_yticks(
        ys, [f"{m} / {t if t != '*' else 'other types'} (n={e.n:,})" for (m, t), e in items]
    )
    ax.set_xlim(0, 1)
    ax.set(
        xlabel="completion (marginal, with 95% CI)",
        title=(
            f"completion per model and task type; sigma {comp.sigma.value:.2f}, "
            f"unsolvable {comp.unsolvable.value:.2f}"
        ),
    )
    ax.grid(axis="x", alpha=0.3)
    _save(fig, path)


def _outage_figure(outages: dict[str, OutageFit], path: Path) -> None:
    keys = list(outages)
    fig, ax = plt.subplots(figsize=(10, max(2.0, 0.7 * len(keys) + 1)))
    for row, key in enumerate(keys):
        o = outages[key]
        t, down = o.timeline
        y = len(keys) - 1 - row
        if t.size:
            up = t[~down]
            if up.size > 4000:  # thin the grey ticks; failures are all drawn
                up = up[np.linspace(0, up.size - 1, 4000).astype(int)]
            ax.plot(up, np.full(up.size, y), "|", color="0.75", ms=8)
            ax.plot(t[down], np.full(int(down.sum()), y), "|", color="C3", ms=10)
        bars = [(e.start_s, max(e.length_s, 1e-9)) for e in o.episodes]
        if bars:
            ax.broken_barh(bars, (y - 0.35, 0.7), color="C3", alpha=0.25)
    ax.set_yticks(range(len(keys))[::-1], [f"{k} ({len(outages[k].episodes)})" for k in keys])
    ax.set(
        xlabel="time (s): grey = answered calls, red = availability failures, "
        "shaded = detected outages",
        title="outage episodes per provider",
    )
    _save(fig, path)


# ------------------------------------------------------------------------- Markdown
def _markdown(cal: Calibration, figures: dict[str, str]) -> str:
    out: list[str] = []
    w = out.append
    w("# Calibration report")
    w("")
    w(
        f"{cal.n_attempts:,} attempts of {cal.n_tasks:,} tasks over "
        f"{cal.span_s / 3600:.3g} h, from: {', '.join(cal.sources) or 'records in memory'}."
    )
    w("")
    w(
        "Every number: the observations it rests on (n), a 95% CI, and how it was "
        "fitted or why it was not. The method of each fit is in `sim/world/calibration.py`."
    )
    for note in cal.notes:
        w(f"- note: {note}")
    comp = cal.completion
    if comp is not None:
        w("")
        w("## Task difficulty")
        w("")
        w("| parameter | value | n | 95% CI | note |")
        w("|---|---|---|---|---|")
        w(_row("sigma (latent difficulty)", comp.sigma))
        w(_row("unsolvable share", comp.unsolvable))
        w(_row("retry correlation", comp.rho))
        w("")
        w(
            f"{comp.n_tasks:,} tasks had an answer, {comp.n_multi:,} two or more, "
            f"{comp.n_retried:,} a retried model. The check below predicts each answer "
            "from its task's earlier answers with the fitted model:"
        )
        w("")
        w("| answer | n | observed share solved | predicted |")
        w("|---|---|---|---|")
        for pos, (n, obs, pred) in comp.check.items():
            label = "4th and later" if pos == 4 else {1: "1st", 2: "2nd", 3: "3rd"}[pos]
            w(f"| {label} | {n:,} | {obs:.3f} | {pred:.3f} |")
        if math.isfinite(comp.chi2):
            w("")
            w(f"Chi-square {comp.chi2:.2f} on {len(comp.check)} df, p = {comp.chi2_p:.2g}.")
        w("")
        w("## Completion per model and task type")
        w("")
        w("| model | task type | completion | n answers | 95% CI |")
        w("|---|---|---|---|---|")
        for (m, t), est in sorted(comp.p.items()):
            shown = t if t != "*" else "(other types)"
            w(f"| {m} | {shown} | {_num(est.value)} | {est.n:,} | {_ci(est)} |")
        if "completion" in figures:
            w("")
            w(f"![completion per model and task type]({figures['completion']})")
    w("")
    w("## Models")
    for m, fit in cal.models.items():
        w("")
        w(f"### {m}")
        w("")
        if not fit.observed:
            w("Not in the records: every figure is the config profile's.")
            continue
        kinds = ", ".join(
            f"{k} {v:,}" for k, v in sorted(fit.outcomes.items(), key=lambda kv: -kv[1])
        )
        w(f"{fit.calls:,} calls ({kinds}); provider `{fit.provider}`.")
        w("")
        w("| parameter | value | n | 95% CI | note |")
        w("|---|---|---|---|---|")
        lf = fit.latency
        if lf is not None:
            _, what = lf.distribution()
            w(f"| base latency | {what} | {lf.n:,} ({lf.n_censored} censored) | | {lf.gof()} |")
            if lf.scores:
                scores = ", ".join(f"{k} {v:.4f}" for k, v in lf.scores.items())
                note = "cross-validated; a near tie goes to the simpler family"
                w(f"| held-out log-likelihood per obs | {scores} | | | {note} |")
            w(_row("per output token (s)", lf.per_output))
            w(_row("per input token (s)", lf.per_input))
        w(_row("malformed rate", fit.malformed_rate))
        w(_row("server error rate", fit.server_error_rate))
        w(_row("timeouts (observed)", fit.timeouts))
        w(_row("fail-fast latency (s)", fit.fail_fast_latency_s))
        w(_row("rate limit (rpm)", fit.rate_limit_rpm))
        w(_row("Retry-After (s)", fit.retry_after_s))
        w(_row("context window (tokens)", fit.context_window))
        for key, est in fit.prices.items():
            w(_row(key, est))
        fig = figures.get(f"latency:{m}")
        if fig:
            w("")
            w(f"![latency of {m}]({fig})")
    if cal.outages:
        w("")
        w("## Outages")
        w("")
        w("| provider | episodes | source | mean up-time (s) | mean length (s) | mode |")
        w("|---|---|---|---|---|---|")
        for key, o in cal.outages.items():
            w(
                f"| {key} | {len(o.episodes)} | {o.source} | {_num(o.time_between_est.value)} "
                f"{_ci(o.time_between_est)} | {_num(o.duration_est.value)} | {o.mode} |"
            )
        for key, o in cal.outages.items():
            w("")
            w(f"- **{key}**: {o.time_between_est.note}; length: {o.duration_est.note}.")
        if "outages" in figures:
            w("")
            w(f"![outage timeline]({figures['outages']})")
    w("")
    return "\n".join(out)


def _html(markdown: str) -> str:
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark").enable("table").render(markdown)
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;font-size:90%}td,th{border:1px solid #ccc;"
        "padding:3px 6px;vertical-align:top}img{max-width:100%}"
    )
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>Calibration report"
        f"</title><style>{style}</style></head><body>\n{body}</body></html>\n"
    )


def write_report(cal: Calibration, out: str | os.PathLike[str], *, html: bool = False) -> Path:
    """Write the report of ``cal`` into the directory ``out`` (see the module
    docstring); returns it. ``out`` must be new, empty or an earlier output
    (:class:`~sim.engine.outdir.OutputDirError` otherwise, before anything is written)."""
    out = Path(out)
    with output_dir(out, flag="--report") as tmp:
        figures: dict[str, str] = {}
        if cal.completion is not None and cal.completion.p:
            _completion_figure(cal, tmp / "completion.png")
            figures["completion"] = "completion.png"
        for m, fit in cal.models.items():
            if fit.latency is not None:
                name = f"latency_{_safe(m)}.png"
                _latency_figure(m, fit.latency, tmp / name)
                figures[f"latency:{m}"] = name
        if cal.outages:
            _outage_figure(cal.outages, tmp / "outages.png")
            figures["outages"] = "outages.png"
        text = _markdown(cal, figures)
        (tmp / "report.md").write_text(text, encoding="utf-8")
        if html:
            (tmp / "report.html").write_text(_html(text), encoding="utf-8")
    return out
