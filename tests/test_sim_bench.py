"""bench-sim prints physics, env and per-size render rates for both render settings."""

from __future__ import annotations

from visuomotor_sim import bench


def test_bench_prints_a_row_per_size_with_a_speed_up(capsys):
    assert bench.main(["--frames", "2", "--steps", "50", "--env-steps", "3"]) == 0
    out = capsys.readouterr().out
    assert "physics:" in out and out.count("env (state-only") == 2
    for size in bench.SIZES:
        row = next(line for line in out.splitlines() if line.strip().startswith(f"{size}x{size}"))
        assert row.rstrip().endswith("x") and len(row.split()) == 6
