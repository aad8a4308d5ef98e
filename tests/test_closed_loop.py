"""The full graph, closed loop, headless: sim, encoder, policy and controller as
separate rclpy nodes on the committed models, for 10 seeded nominal episodes.

This is the CI run of what ``make demo`` shows: it fails when the loop reaches
the target in fewer than 90% of the episodes, or when any stage stops
producing output.
"""

from __future__ import annotations

import math

import pytest

from visuomotor_ros.demo import format_report, run_episodes

EPISODES = 10
FIRST_SEED = 1000  # seeds unused by training and evaluation


@pytest.mark.slow
def test_full_graph_reaches_nominal_targets(tmp_path):
    record = tmp_path / "closed_loop.mcap"
    results, stats, sim_seconds, wall = run_episodes(
        EPISODES, FIRST_SEED, "nominal", record=record, wall_timeout=120.0
    )
    print(format_report(results, stats, sim_seconds, wall, "nominal"))
    assert len(results) == EPISODES
    successes = sum(r.success for r in results)
    assert successes >= math.ceil(0.9 * EPISODES), f"{successes}/{EPISODES} episodes succeeded"
    # Every stage produced output at its rate (sim time): camera ~20 Hz, control ~1 kHz.
    assert stats.frames / sim_seconds > 15.0
    assert stats.commands / sim_seconds > 900.0
    assert stats.encoder_inference and stats.policy_inference and stats.camera_to_command_sim
    # The recording holds the loop's topics.
    assert record.stat().st_size > 10_000
