"""Fault injection (visuomotor_bringup.fault_injection) through the suite's own code: three of its
cheapest cases against the running graph, one process per node.

* the policy process stopped (SIGSTOP) mid-run on the sim graph: the controller holds within
  target_timeout of sim time (the graph's stamps, never the wall clock) and tracks again
  after SIGCONT;
* NaN joint states among a 1 kHz driver's on the robot graph (controller on the topics
  backend, position interface): every command on the wire within the robot's limits;
* hostile camera images (encodings, sizes, steps, truncated data) on the sim graph: the
  encoder refuses them and nothing crashes.

The full suite (``fault-injection``) makes the README's reliability table.
"""

from __future__ import annotations

import pytest

from visuomotor_bringup import fault_injection

pytestmark = pytest.mark.slow

CASES = ("sim/stop:policy", "robot/joint_states:nan", "sim/images:hostile")


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    options = fault_injection.Options.quick(log_dir=tmp_path_factory.mktemp("faults"))
    cases = fault_injection.select(CASES)
    return {r.case: r for r in fault_injection.run_cases(cases, options)}


@pytest.mark.parametrize("name", CASES)
def test_fault_case_ends_without_crash_or_limit_violation(results, name):
    result = results[name]
    assert not result.crashes, "\n".join(result.crash_output)
    assert result.checked > 0, result
    assert result.violations == 0, result.first_violation
    assert result.passed, result.failures


def test_stalled_policy_brings_the_controller_to_hold_within_target_timeout(results):
    result = results["sim/stop:policy"]
    # target_timeout 0.1 s + one /clock period + modelled perception latency + two ticks.
    assert result.hold_bound == pytest.approx(0.1 + 0.01 + 0.005 + 0.002)
    assert result.time_to_hold is not None and result.time_to_hold <= result.hold_bound, result
    assert "tracking again" in result.outcome, result.outcome


def test_hostile_images_are_refused_by_the_encoder(results):
    result = results["sim/images:hostile"]
    assert result.figures["sent"] > 0, result
    assert result.figures["refused"] > 0, result.outcome


def test_unknown_case_pattern_is_refused_with_the_case_list():
    with pytest.raises(ValueError, match="no case matches sim/teleport"):
        fault_injection.select("sim/teleport")
