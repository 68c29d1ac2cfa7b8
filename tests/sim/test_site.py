"""ProviderSite: the four steps of a call, shared by the simulator and the HTTP twin."""

from __future__ import annotations

from typing import Any

from sim import ProviderSite, World, parse_scenario
from sim.engine.driver import Simulation
from sim.twin.server import TwinServer
from sim.world.scenario import Scenario


def _scenario(**extra: Any) -> Scenario:
    return parse_scenario(
        {
            "models": {
                "m": {
                    "provider": "p",
                    "completion": {"default": 1.0},
                    "latency": {"dist": "fixed", "value_s": 2.0},
                    "cost_per_task": 0.0,
                    **extra,
                }
            }
        }
    )


def _site(**extra: Any) -> ProviderSite[str]:
    world = _scenario(**extra).realize(0, 3600.0)
    return ProviderSite(world, world.index("m"))


def test_the_rate_window_is_a_fixed_clock_minute_and_refusals_do_not_count() -> None:
    site = _site(rate_limit_rpm=3, retry_after_s=7)
    assert [site.arrive(t) for t in (0.0, 1.0, 59.0, 59.5, 59.9)] == [
        None,
        None,
        None,
        "rate_limited",
        "rate_limited",
    ]
    assert site.retry_after_s == 7
    # a new clock minute starts a new window (not a sliding one)
    assert [site.arrive(t) for t in (60.0, 60.1, 60.2, 60.3)] == [None, None, None, "rate_limited"]
    assert site.window_count == 3


def test_an_outage_refuses_calls_with_its_mode_and_still_counts_in_the_window() -> None:
    outage = {
        "time_between": {"dist": "fixed", "value_s": 10.0},
        "duration": {"dist": "fixed", "value_s": 5.0},
        "mode": "hang",
    }
    site = _site(outage=outage, rate_limit_rpm=100)
    world = site.world
    (start, end) = world.outage_intervals(0)[0][1:]
    assert end - start == 5.0  # the first period may start part-way (a stationary start)
    assert site.arrive(start - 0.5) is None
    assert site.arrive(start + 2.0) == "hang"
    assert site.arrive(end + 0.5) is None
    assert site.window_count == 3


def test_capacity_hands_the_slot_to_the_first_waiter_still_waiting() -> None:
    site = _site(capacity=2)
    assert site.acquire() and site.acquire()
    assert not site.acquire()
    for w in ("gone", "a", "b"):
        site.wait(w)
    still = {"a", "b"}
    assert site.release(still.__contains__) == "a"  # "gone" gave up and is skipped
    assert site.in_use == 2
    assert site.release(still.__contains__) == "b"
    assert site.release(still.__contains__) is None
    assert site.in_use == 1
    assert site.release(still.__contains__) is None
    assert site.in_use == 0


def test_the_answer_is_the_worlds_draw_for_task_model_and_attempt() -> None:
    site = _site()
    world: World = site.world
    assert site.answer(3, 2, "json", 10, 20) == world.attempt(0, 3, 2, "json", 10, 20)


def test_the_simulator_and_the_twin_run_calls_through_provider_sites() -> None:
    """One implementation of the steps: both drivers hold ProviderSites (the old private
    copies are gone), so a fix to a step reaches ``sim replay`` and ``sim serve`` alike."""
    from router import load_seed_config
    from sim import load_seed_scenario
    from sim.engine.results import ResultSink

    config, scenario = load_seed_config(), load_seed_scenario()
    ids = [m.id for m in config.models]
    sim = Simulation(
        config, scenario.realize(0, 3600.0, model_ids=ids), seed=0, sink=ResultSink(ids)
    )
    assert all(isinstance(s, ProviderSite) for s in sim.sites)
    twin = TwinServer(scenario, seed=0)
    twin._clear()
    assert len(twin._sites) == len(scenario.models)
    assert all(isinstance(s, ProviderSite) for s in twin._sites)
