"""The benchmark's ``compute`` floor: it runs the graph's work without ROS and reports
figures that agree with each other (timing itself is the benchmark's business, not the
tests': nothing here asserts a duration or a rate)."""

from __future__ import annotations

import json
import math

from visuomotor_bringup import bench_realtime
from visuomotor_sim.hardware import SimHardwareConfig


def test_compute_floor_runs_the_graphs_work_and_its_figures_agree(capsys) -> None:
    bench_realtime.role_compute(0.3, priority=0, gil_lead=3e-4, frames=4, ticks=200)
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    assert all(math.isfinite(value) for value in figures.values()), figures
    assert figures["loop_sched_fifo"] == 0.0  # priority 0: normal scheduling
    assert 0.0 <= figures["loop_misses_pct"] <= 100.0
    stages = [figures[f"{stage}_p50_ms"] for stage in ("render", "encoder", "policy")]
    assert min(stages) > 0.0
    # Every frame's chain is the sum of its stages: its median is at least each stage's.
    assert figures["chain_p50_ms"] >= max(stages)
    assert figures["chain_p99_ms"] >= figures["chain_p50_ms"]
    # The lockstep ceiling: one camera period of sim time over the wall time of a frame,
    # the chain overlapping the ticks of the lockstep latency.
    config = SimHardwareConfig()
    per_frame = round(config.control_rate_hz / config.camera_rate_hz)
    overlap = round(config.lockstep_latency * config.control_rate_hz)
    tick_ms = figures["tick_back_to_back_p50_us"] * 1e-3
    frame_ms = max(figures["chain_p50_ms"], overlap * tick_ms) + (per_frame - overlap) * tick_ms
    assert math.isclose(figures["lockstep_ceiling"], 1e3 / config.camera_rate_hz / frame_ms,
                        rel_tol=1e-9)
