"""The full graph, closed loop, headless: sim, encoder, policy and controller as
separate rclpy nodes on the committed models, for 20 seeded nominal episodes and 20
held-out ones (the shifted dynamics and visuals that stand in for the real robot).

This is the CI run of what ``make demo`` shows, and it asserts the project's goals:
>= 90% success in the nominal profile (measured on these seeds: 19/20 and 20/20); on the
held-out profile with the vision encoder the goal is >= 90% (measured: 19/20 and 20/20
with the keypoint encoder), asserted here at >= 85% because closed-loop episodes are not
bit-exact from run to run on a loaded machine.
"""

from __future__ import annotations

import pytest

from visuomotor_ros.demo import format_report, run_episodes

EPISODES = 20
FIRST_SEED = 1000  # seeds unused by training and evaluation
MIN_SUCCESSES = 18  # 90%
MIN_HELDOUT_SUCCESSES = 17  # 85%
GOAL_BOUND_M = 0.012  # median error of the policy's goal per hand–target band


@pytest.mark.slow
def test_full_graph_reaches_nominal_targets(tmp_path):
    record = tmp_path / "closed_loop"  # a rosbag2 bag directory
    results, stats, sim_seconds, wall = run_episodes(
        EPISODES, FIRST_SEED, "nominal", record=record, wall_timeout=120.0
    )
    print(format_report(results, stats, sim_seconds, wall, "nominal"))
    assert len(results) == EPISODES
    successes = sum(r.success for r in results)
    assert successes >= MIN_SUCCESSES, f"{successes}/{EPISODES} episodes succeeded"
    # Every stage produced output at its rate (sim time): camera ~20 Hz, control ~1 kHz.
    assert stats.frames / sim_seconds > 15.0
    assert stats.control_rate() > 900.0
    assert stats.encoder_inference and stats.policy_inference and stats.camera_to_command_sim
    # The recording is a bag directory: metadata.yaml and the MCAP file holding the
    # loop's topics.
    assert (record / "metadata.yaml").is_file()
    assert (record / f"{record.name}_0.mcap").stat().st_size > 10_000


@pytest.mark.slow
def test_full_graph_reaches_heldout_targets_with_the_encoder():
    results, stats, sim_seconds, wall = run_episodes(
        EPISODES, FIRST_SEED, "heldout", wall_timeout=120.0
    )
    print(format_report(results, stats, sim_seconds, wall, "heldout"))
    assert len(results) == EPISODES
    successes = sum(r.success for r in results)
    errors = [round(r.error * 100, 2) for r in results]
    assert successes >= MIN_HELDOUT_SUCCESSES, \
        f"{successes}/{EPISODES} held-out episodes succeeded; final errors {errors} cm"
    # The goal the policy acts on (confident estimates filtered, frozen near the hand) was
    # compared with the true target at every frame, in every hand–target band. Measured on
    # these seeds: median 0.59-0.80 cm per band (the held-out goal is 0.8 cm); CI holds a
    # looser bound, as closed-loop runs are not bit-exact.
    goal = stats.errors_by_band("goal")
    assert all(band["count"] >= 50 for band in goal.values()), goal
    assert all(band["median_m"] <= GOAL_BOUND_M for band in goal.values()), goal
