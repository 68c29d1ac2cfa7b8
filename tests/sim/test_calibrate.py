"""sim calibrate: the fits, the YAML they write, the command, and a hidden ground truth.

The ground truth (``tests/data/calibration/truth_scenario.yaml``) is served by the
provider twin and the live router is driven through it with attempt recording, as
``bench/calibration.py`` does at full size (6,000 + 10,000 tasks); here 1,800 tasks at
time scale 0.05 keep the test under a minute. See
``test_live_recording_recovers_the_hidden_truth`` for the targets and why some are
looser than the bench's.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from scipy import stats

from router import load_config
from sim.traces.attempts import write_attempts
from sim.traces.synth import TokenDist, synthesize
from sim.traces.tasks import replay_columns
from sim.world import calibration as cal_mod
from sim.world.calibration import (
    Records,
    calibrate,
    find_episodes,
    fit_completion,
    fit_latency,
    load_records,
    render_yaml,
    select_family,
)
from sim.world.scenario import load_scenario
from sim.world.validation import record_against_twin, results_to_attempts, simulate, validate

DATA = Path(__file__).resolve().parents[1] / "data" / "calibration"
TRUTH = DATA / "truth_scenario.yaml"
CONFIG = DATA / "truth_config.yaml"
LLMPERF = Path(__file__).resolve().parents[3] / "shared" / "data" / "llmperf-leaderboard"


def _traffic(n: int, rate: float, seed: int) -> pl.DataFrame:
    return synthesize(
        n_tasks=n,
        rate_per_s=rate,
        seed=seed,
        completion_tokens=TokenDist(mu=math.log(250), sigma=0.7, low=1),
    )


@pytest.fixture(scope="module")
def sim_records() -> Records:
    """3,000 tasks of the hidden truth through the *simulator* (no sockets): fast data
    whose generating parameters are known exactly."""
    truth, config = load_scenario(TRUTH), load_config(CONFIG)
    cols = replay_columns(_traffic(3000, 3.0, 11))
    return Records(results_to_attempts(simulate(cols, config, truth, seed=11), cols))


# ------------------------------------------------------------------------- latency
@pytest.mark.parametrize(
    ("family", "draw"),
    [
        ("weibull", lambda rng, n: 0.5 * rng.weibull(0.8, n)),
        (
            "lognormal_mix2",
            lambda rng, n: np.concatenate(
                [rng.lognormal(0.0, 0.2, n * 2 // 3), rng.lognormal(1.5, 0.3, n - n * 2 // 3)]
            ),
        ),
    ],
)
def test_the_family_is_chosen_out_of_sample(family: str, draw) -> None:  # noqa: ANN001
    rng = np.random.default_rng(3)
    x = draw(rng, 2000)
    cap = float(np.quantile(x, 0.98))
    censored = x > cap
    chosen, scores, _ = select_family(np.minimum(x, cap), censored)
    assert chosen == family, scores
    # A censored tail rules the empirical distribution out (it cannot extend past it).
    assert "empirical" not in scores


@pytest.mark.parametrize("jitter", [0.0, 1e-9])
def test_equal_latencies_fit_a_narrow_law_instead_of_crashing(jitter: float) -> None:
    """A model whose answers all take the same time (a fixed error delay, a twin without
    jitter) once drove every family's scale to 0: lognormal raised a math domain error
    from inside the optimizer, Weibull an overflow. Each family now fits the narrowest
    law allowed (0.3 % spread), centred on the value."""
    x = np.full(60, 0.05) + np.arange(60) * jitter
    cens = np.zeros(60, dtype=bool)
    for family in (cal_mod._LognormalF(), cal_mod._GammaF(), cal_mod._WeibullF()):
        th = family.fit(x, cens)
        median, p95 = family.ppf(th, np.array([0.5, 0.95]))
        assert median == pytest.approx(0.05, rel=1e-3), family.name
        assert 0.05 < p95 < 0.05 * 1.01, family.name
    chosen, scores, _ = select_family(x, cens)
    assert all(math.isfinite(v) for v in scores.values()), scores


def test_token_terms_and_censoring() -> None:
    rng = np.random.default_rng(5)
    n = 3000
    ct = np.rint(rng.lognormal(math.log(250), 0.7, n))
    pt = np.rint(rng.lognormal(7.3, 1.1, n)).clip(1, 7437)
    lat = rng.gamma(1.5, 0.8, n) + 0.01 * ct + 0.0002 * pt
    cens = lat > 12.0
    fit = fit_latency(np.minimum(lat, 12.0), pt, ct, cens, seed=1)
    assert fit.per_output is not None and fit.per_input is not None
    assert fit.per_output.value == pytest.approx(0.01, rel=0.05)
    assert fit.per_output.ci[0] <= 0.01 <= fit.per_output.ci[1]
    assert fit.per_input.value == pytest.approx(0.0002, rel=0.15)
    assert fit.n_censored == int(cens.sum()) > 0
    # The base's quantiles (gamma(1.5, 0.8): median 0.93 s, p90 2.5 s) come back although
    # the tail is cut (gamma and Weibull are within a hair of each other out of sample).
    q50, q90 = fit.ppf(np.array([0.5, 0.9]))
    assert q50 == pytest.approx(0.93, rel=0.10) and q90 == pytest.approx(2.48, rel=0.10)
    assert fit.ks < 0.03 and fit.ad is None  # AD is not given with 2%+ censored


def test_constant_sizes_give_no_token_term() -> None:
    rng = np.random.default_rng(6)
    lat = rng.lognormal(0.0, 0.4, 500)
    fit = fit_latency(lat, np.full(500, 550), np.full(500, 150))
    assert fit.per_output is None and fit.per_input is None
    assert fit.family in ("lognormal", "gamma", "weibull")


# ---------------------------------------------------------------------- completion
def test_completion_accounts_for_fallback_selection(sim_records: Records) -> None:
    truth = load_scenario(TRUTH)
    att = sim_records.attempts
    fit = fit_completion(att)
    # sigma (1.3), u (0.08) and rho (0.4) within 3 standard errors (the 95% CI's
    # half-width / 1.96) of the truth: 3,000 tasks pin sigma to about +-0.2.
    for est, true in (
        (fit.sigma, truth.difficulty.sigma),
        (fit.unsolvable, truth.difficulty.unsolvable),
        (fit.rho, truth.difficulty.retry_correlation),
    ):
        assert est.ci is not None, est
        se = (est.ci[1] - est.ci[0]) / (2 * 1.96)
        assert abs(est.value - true) <= 3 * se, (est, true)
    # boreal-pro answers sql tasks only after atlas-mini failed them: its raw share of
    # solved answers is far below its 0.82, the likelihood's estimate is not.
    sql = att.filter((pl.col("model") == "boreal-pro") & (pl.col("task_type") == "sql"))
    answers = sql.filter(pl.col("outcome").is_in(["ok", "validation", "malformed"]))
    raw = (answers.get_column("outcome") == "ok").mean()
    est = fit.p[("boreal-pro", "sql")]
    assert raw < 0.55
    assert est.ci[0] <= 0.82 <= est.ci[1]
    # The per-position check: the fit predicts later answers from earlier ones.
    assert fit.chi2_p > 0.01
    for n, observed, predicted in fit.check.values():
        assert abs(observed - predicted) < 3 * math.sqrt(predicted * (1 - predicted) / n) + 0.01


def test_single_answers_do_not_identify_difficulty() -> None:
    rows = [
        {
            "task_id": f"t{i}",
            "model": "m",
            "attempt": 1,
            "start_s": float(i),
            "latency_s": 1.0 + (i % 7) / 10,
            "outcome": "ok" if i % 3 else "validation",
        }
        for i in range(300)
    ]
    fit = fit_completion(pl.DataFrame(rows))
    assert fit.sigma.value == fit.unsolvable.value == fit.rho.value == 0.0
    assert "NOT IDENTIFIABLE" in fit.sigma.note and "NOT IDENTIFIABLE" in fit.rho.note
    assert fit.p[("m", "*")].value == pytest.approx(2 / 3, abs=0.01)


# ------------------------------------------------------------------------- outages
def test_outage_episodes_are_runs_beyond_the_baseline() -> None:
    rng = np.random.default_rng(2)
    t = np.sort(rng.uniform(0, 3600, 4000))
    outcome = np.where(rng.random(4000) < 0.01, "server_error", "ok").astype(object)
    down = (t > 1000) & (t < 1060)
    outcome[down] = "server_error"
    episodes, baseline, k, _, _ = find_episodes(t, outcome)
    assert len(episodes) == 1 and k >= 3
    assert episodes[0].start_s == pytest.approx(1000, abs=3)
    assert episodes[0].end_s == pytest.approx(1060, abs=3)
    assert baseline == pytest.approx(0.01, abs=0.005)
    # Slow answers cut off now and then do not join 5xx's into an outage.
    mixed = np.array(["ok", "server_error", "timeout", "server_error", "ok"] * 50, dtype=object)
    assert find_episodes(np.arange(mixed.size, dtype=float), mixed)[0] == []


# --------------------------------------------------------------------------- YAML
def test_every_fitted_number_is_commented_and_the_yaml_loads(
    sim_records: Records, tmp_path: Path
) -> None:
    cal = calibrate(sim_records, load_config(CONFIG))
    text = render_yaml(cal)
    path = tmp_path / "fitted.yaml"
    path.write_text(text)
    scenario = load_scenario(path)
    assert set(scenario.models) == {"atlas-mini", "atlas-large", "boreal-pro", "cirrus-flash"}
    assert scenario.model_dump() == cal.scenario.model_dump()
    for line in text.splitlines():
        code, _, comment = line.partition("#")
        key, sep, value = code.strip().partition(":")
        if sep and value.strip() and value.strip()[0].isdigit() and key != "name":
            assert comment, f"uncommented number: {line}"
            assert "n=" in comment or "NOT IDENTIFIABLE" in comment, line
    assert "KS D=" in text and "95% CI" in text
    # Providers share outages as the config groups them; prices and limits come back.
    assert scenario.models["atlas-mini"].outage.shared
    assert scenario.models["cirrus-flash"].rate_limit_rpm == pytest.approx(60, abs=3)
    assert scenario.models["atlas-large"].input_per_mtok == pytest.approx(3.0, rel=1e-3)
    assert scenario.models["boreal-pro"].cost_per_task == pytest.approx(0.012)
    window = scenario.models["cirrus-flash"].context_window
    assert window is not None and 5_700 <= window <= 6_000


def test_a_config_model_never_called_comes_from_its_profile(sim_records: Records) -> None:
    att = sim_records.attempts.filter(pl.col("model") != "boreal-pro")
    cal = calibrate(Records(att), load_config(CONFIG))
    spec = cal.scenario.models["boreal-pro"]
    assert spec.cost_per_task == 0.012 and spec.latency.mean() == pytest.approx(5.0)
    assert "never called in the records" in cal.yaml_text


# ------------------------------------------------------------------------- command
@pytest.fixture(scope="module")
def recording(sim_records: Records, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rec") / "attempts.ndjson"
    write_attempts(sim_records.attempts.head(2500), path)
    return path


def test_cli_writes_the_scenario_and_the_report(
    recording: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``sim calibrate`` in this process, through its entry point (tests/sim/test_cli.py
    runs the console script itself as a subprocess)."""
    from sim.cli import main

    out, report = tmp_path / "s.yaml", tmp_path / "report"
    argv = ["calibrate", str(recording), "--out", str(out), "--report", str(report)]
    monkeypatch.setattr(sys, "argv", ["sim", *argv, "--config", str(CONFIG), "--html"])
    try:
        main()
    except SystemExit as exc:
        assert exc.code in (0, None), capsys.readouterr().err
    err = capsys.readouterr().err
    assert "wrote 4 models" in err
    load_scenario(out)
    names = {p.name for p in report.iterdir()}
    assert {"report.md", "report.html", "completion.png", "outages.png"} <= names
    assert {f"latency_{m}.png" for m in ("atlas-mini", "cirrus-flash")} <= names
    text = (report / "report.md").read_text()
    assert "## Task difficulty" in text and "![completion" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.ndjson", "--out", "{tmp}/s.yaml"], "missing.ndjson: no such file"),
        (["{rec}", "--out", "{tmp}/s.json"], "--out: "),
        (["{rec}", "--out", "{tmp}/s.yaml", "--report", "{tmp}/busy"], "--report: "),
        (["{rec}", "--out", "{tmp}/s.yaml", "--config", "{tmp}/nope.yaml"], "--config: "),
        (["{rec}", "--out", "{tmp}/s.yaml", "--time-scale", "0"], "--time-scale: "),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(
    recording: Path,
    tmp_path: Path,
    args: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sim.cli import main

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "mine.txt").write_text("keep")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    argv = [a.format(tmp=tmp_path, rec=recording) for a in args]
    monkeypatch.setattr(sys, "argv", ["sim", "calibrate", *argv])
    with pytest.raises(SystemExit) as exc:
        main()
    err = capsys.readouterr().err
    assert exc.value.code == 2, err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert message in err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_time_scale_reads_a_twin_recording_in_scenario_seconds(recording: Path) -> None:
    one = load_records(recording)
    scaled = load_records(recording, time_scale=0.5)
    assert scaled.attempts["latency_s"].sum() == pytest.approx(2 * one.attempts["latency_s"].sum())


# ------------------------------------------------------------------- ground truth
#: Share of the recording's span the event loop may have stalled (beyond
#: record_against_twin's 0.2 scenario-second threshold) before the recording no
#: longer shows the truth (see the test's docstring).
MAX_STALLED_SHARE = 0.05
#: The twin's time scale: 10x faster than scenario time, as bench/calibration.py.
SCALE = 0.1


@pytest.mark.realtime
def test_live_recording_recovers_the_hidden_truth(tmp_path: Path) -> None:
    """The live router against the twin serving the hidden truth: recorded, calibrated,
    and validated out of sample (first half calibrates, second half is predicted).

    bench/calibration.py's targets are completion within 2 pp; cost per task, p50 and
    p95 latency within 10 %; sigma within 20 % -- met there with 6,000 + 10,000 tasks.
    Here 1,800 tasks keep the test near a minute, and the tolerances are the targets
    widened to what that size allows, with the reason: sigma within 35 % (1,800 tasks
    pin it to about +-15 %, one SE, vs +-8 % for the bench's 6,000); completion by
    validate's verdict (see below), cost within 15 % and p95 within 20 % (900 predicted
    tasks: the spread of one recording's luck alone -- its outages, which tasks fell
    over to the expensive model -- is about +-3 pp, +-8 % and +-10 % at 95 %, measured
    over the replications); p50 keeps its 10 %. And no overall metric may *fail* (beyond
    its tolerance and beyond that luck).

    The machine's load: at time scale 0.05 the twin ran 20x faster than scenario
    time, so a process stall of 10 ms was 0.2 scenario seconds added to every call in
    flight -- on a busy machine, timeouts the provider never caused (two failed runs
    of this test had 4.5 pp less predicted than observed completion: the first half's
    stall timeouts became outages and slow answers). Even on a quiet machine the loop
    then stalled beyond 0.2 scenario seconds for 13 % of the span (measured: the router
    and the twin share one interpreter, 18 ms per stall on average), so the test runs
    at 0.1, as the bench does (60 s of recording). The recording's heartbeat measures
    those stalls; calibration and validation leave out the calls and tasks in flight
    during one (they are the client's, not the provider's). If the loop stalled for
    more than MAX_STALLED_SHARE of the span, the recording is not of the truth at all
    (measured at load 9 on 2 cores: stalled 85 % of the time, most calls timed out)
    and the test is skipped, saying so: no tolerance could tell a calibration error
    from the machine's then.
    """
    truth, config = load_scenario(TRUTH), load_config(CONFIG)
    trace = _traffic(1800, 3.0, 21)
    info = record_against_twin(config, truth, trace, tmp_path, seed=21, time_scale=SCALE)
    span = float(trace.get_column("arrival_s").max())
    if info["stalled_s"] > MAX_STALLED_SHARE * span:
        pytest.skip(
            f"the machine could not drive the twin in real time: its event loop stalled "
            f"{info['stalled_s']:.0f} of {span:.0f} scenario seconds "
            f"({len(info['stalls'])} stalls); the recording does not show the truth"
        )
    stalls = info["stalls"]
    records = load_records([info["attempts"], info["tasks"]], time_scale=SCALE)
    whole = calibrate(records, config, seed=21, stalls=stalls)
    sigma = whole.completion.sigma
    assert abs(sigma.value - truth.difficulty.sigma) <= 0.35 * truth.difficulty.sigma, sigma
    # 20 replications, not 6: the prediction is a median over them, and with 6 it moved
    # by several per cent from one validation seed to the next on the same recording
    # (p50 -6.9 % to -3.0 %, cost -5.7 % to -2.1 %; 20: -4.7 % to -2.1 %, -3.5 % to -0.7 %),
    # which on top of the recording's own timing noise failed the tolerances below in
    # about a third of the runs (cost -15.5 %; p95 and fallback rate failing).
    report = validate(records, config, split=0.5, replications=20, seed=21, stalls=stalls)
    got = {m.name: round(m.diff, 4) for m in report.metrics if "." not in m.name}
    got["stalled_tasks"] = report.stalled_tasks
    assert report.stalled_tasks <= 0.1 * (report.test_tasks + report.stalled_tasks), got
    # Completion is judged by validate's own verdict: within 2 pp, or not told apart
    # from 0 by the 95% interval of one realisation (the recording's luck: at 900
    # predicted tasks about +-4 pp here, and the quiet-machine runs measured -5.9 to
    # -1.9 pp). A calibration that is wrong, e.g. independence (sigma 0), predicts
    # completion beyond that interval and fails; the 2 pp target itself is the
    # bench's, at 10,000 predicted tasks.
    assert report.metric("completion_rate").status in ("pass", "noise"), got
    # p99 of 900 predicted tasks is their 9 slowest, and a live recording's slowest
    # answers also carry the shared interpreter's stalls below the 0.2 s heartbeat
    # threshold, which the twin cannot predict (CI, busier than a quiet machine, once
    # recorded a p99 beyond 10 % with p95 at -14 %): it is held to 30 % and left out
    # of the no-failure rule, which every other overall metric keeps.
    for name, tol in (
        ("cost_per_task", 0.15),
        ("latency_p50_s", 0.10),
        ("latency_p95_s", 0.20),
        ("latency_p99_s", 0.30),
    ):
        assert abs(report.metric(name).diff) <= tol, (name, got)
    failed = [m.name for m in report.metrics if m.status == "fail" and "." not in m.name]
    assert not [name for name in failed if name != "latency_p99_s"], got


def test_a_stall_window_leaves_its_calls_out(sim_records: Records) -> None:
    """Known client stalls: the calls in flight then are left out of the latency fit
    and the error rates, and the tasks out of validation's comparison."""
    from sim.world.validation import _stalled_tasks

    att = sim_records.attempts.filter(pl.col("start_s") < 300.0)  # 900 tasks suffice
    # Make every atlas-mini call that started in [150, 210) s a 15 s timeout, as a
    # stalled client records them (one provider only: a stall the fit cannot infer, it
    # needs two providers timing out together): without the window they inflate the
    # timeouts and the latency tail.
    window = (150.0, 225.0)
    hit = (pl.col("start_s") >= 150.0) & (pl.col("start_s") < 210.0)
    hit = hit & (pl.col("model") == "atlas-mini")
    stalled = att.with_columns(
        pl.when(hit).then(pl.lit("timeout")).otherwise(pl.col("outcome")).alias("outcome"),
        pl.when(hit).then(pl.lit(15.0)).otherwise(pl.col("latency_s")).alias("latency_s"),
    )
    n_hit = att.filter(hit).height
    assert n_hit > 50
    config = load_config(CONFIG)
    blind = calibrate(Records(stalled), config)
    told = calibrate(Records(stalled), config, stalls=[window])
    m = "atlas-mini"
    # Outside the window the recording is the simulator's own: its timeouts are rare.
    assert blind.models[m].timeouts.value > 0.1
    assert told.models[m].timeouts.value < 0.02
    assert told.models[m].latency.n_censored < 0.1 * blind.models[m].latency.n_censored
    assert blind.stalls == [] and told.stalls == [window]
    # Validation leaves out every task with a call in flight during the window.
    in_flight = (pl.col("start_s") <= window[1]) & (
        pl.col("start_s") + pl.col("latency_s") >= window[0]
    )
    expected = set(stalled.filter(in_flight).get_column("task_id").to_list())
    assert _stalled_tasks(stalled, [window]) == expected and len(expected) > n_hit // 2


# ------------------------------------------------------------------------ llmperf
#: The random halves the llmperf check draws per run (seeds of numpy's default_rng).
LLMPERF_SPLITS = range(5)


@pytest.mark.skipif(
    not LLMPERF.exists(), reason=f"the shared llmperf data is absent ({LLMPERF} not found)"
)
def test_llmperf_latency_models_hold_out_of_sample() -> None:
    """Per llmperf-leaderboard run with >= 50 successful requests (16 runs) and per
    random half (5 seeded splits, 80 checks): the latency model chosen and fitted on
    one half is not rejected by KS at 1 % on the other half -- or, where the two halves
    differ from each other, it predicts the other half no worse than the first half's
    own values do.

    An empirical fit *is* its half's sample, so it is checked with the two-sample KS
    test. A fitted family is checked with the one-sample test, which takes the fitted
    CDF as exact; but the fit rests on ~75 values, and some splits draw two halves
    that differ by more than the one-sample test allows (two-sample p 0.024 and 0.026
    between the halves themselves in the two such splits here), so that every model
    fitted to one half is "rejected" on the other. There the question is whether the
    model is a worse predictor of the held-out half than the data it was fitted to:
    its KS distance must not exceed that of the first half's empirical CDF.

    Measured (the 80 checks): 8 one-sample rejections at 1 % before families had to
    pass the held-out PIT check of ``select_family``, 6 after; 2 of those are the
    unlucky splits above; 4 remain (fireworks_7b split 2, fireworks_13b 4, anyscale_70b
    4, groq_70b 4), each within 0.05 of its half's own KS distance (the largest excess
    0.045) -- no gross misfit, which the loop asserts for every rejected check (a single
    lognormal for a two-mode run is 0.15 or more farther).
    """
    from sim import import_llmperf

    df = import_llmperf(LLMPERF / "raw_data").filter(pl.col("outcome") == "ok")
    checked, rejected, rescued = 0, [], []
    for (run,), runs in df.group_by("model", maintain_order=True):
        if runs.height < 50:
            continue
        lat = runs.get_column("latency_s").to_numpy()
        pt = runs.get_column("prompt_tokens").fill_null(0).to_numpy()
        ct = runs.get_column("completion_tokens").fill_null(0).to_numpy()
        for split in LLMPERF_SPLITS:
            idx = np.random.default_rng(split).permutation(runs.height)
            a, b = idx[: runs.height // 2], idx[runs.height // 2 :]
            fit = fit_latency(lat[a], pt[a], ct[a], seed=1)
            held_out = fit.base_of(lat[b], pt[b], ct[b])
            own = stats.ks_2samp(held_out, fit.base)
            test = own if fit.family == "empirical" else stats.kstest(held_out, fit.cdf)
            checked += 1
            if test.pvalue >= 0.01:
                continue
            if test.statistic <= own.statistic:
                rescued.append((run, split, fit.family, round(float(own.pvalue), 4)))
            else:
                # Never a gross misfit: no farther from the held-out half than the
                # first half's own values are, give or take 0.05 (a lognormal for a
                # two-mode run is 0.15 or more farther).
                assert test.statistic <= own.statistic + 0.05, (run, split, fit.family)
                rejected.append((run, split, fit.family, round(float(test.pvalue), 4)))
    assert checked >= 15 * len(LLMPERF_SPLITS)
    # Measured (see the docstring): 4 of 80 (run, split) pairs are rejected, each
    # within 0.05 of its half's own distance; more means the selection got worse.
    assert len(rejected) <= 4, rejected
    # The escape is for unlucky splits, not a standing excuse: rare, and only where the
    # halves themselves disagree.
    assert len(rescued) <= 0.05 * checked, rescued
    assert all(p < 0.05 for *_, p in rescued), rescued


def test_module_docstring_names_every_method() -> None:
    doc = cal_mod.__doc__ or ""
    for word in ("Gauss-Hermite", "median regression", "held-out", "Kaplan-Meier", "status-page"):
        assert word in doc
    assert yaml  # the YAML the tests read is PyYAML's (the loader's) reading
