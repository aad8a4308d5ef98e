"""Episodes per second of one experiment run serially and on Ray, and whether they agree.

    python -m visuomotor_models.experiment.bench models/config/experiments/bench.yaml

Runs the experiment twice into fresh directories: every episode in this process
(``--serial``), then on a local Ray instance with every core. Throughput counts the
episodes' run phase of each (Ray's start-up is reported beside it); the two result sets
must match episode by episode for the deterministic state-only mode. Writes
``bench.json`` in ``--out``. Timings on a shared machine move with its load: run it when
the machine is quiet, and compare the two figures of one run rather than runs.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from visuomotor_models.experiment.cli import run
from visuomotor_models.experiment.config import ConfigError, ExperimentConfig

OUTCOME = ("success", "final_error_m", "time_to_success_s", "steps")


def _load_average() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def bench(config: ExperimentConfig, out: Path, workers: int | None = None) -> dict:
    results = {}
    rows = {}
    for name, serial in (("serial", True), ("ray", False)):
        load_before = _load_average()
        status, _, info = run(config, out / name, serial=serial, workers=workers,
                              progress=False, log=lambda *_: None)
        if status != 0:
            raise RuntimeError(f"{name} run did not finish every episode (status {status}); "
                               f"see {out / name}/report.md")
        results[name] = {
            "episodes": info.episodes_run, "wall_s": round(info.wall_s, 2),
            "episodes_per_s": round(info.episodes_run / info.wall_s, 3),
            "workers": info.workers, "startup_s": round(info.startup_s, 2),
            "load_average_before": round(load_before, 2),
        }
        with open(out / name / "results.jsonl") as handle:
            rows[name] = {r["id"]: tuple(r.get(k) for k in OUTCOME)
                          for r in map(json.loads, handle)}
    differing = sorted(t for t in rows["serial"] if rows["serial"][t] != rows["ray"].get(t))
    return {
        "config": str(config.source), "cpu_count": os.cpu_count(),
        **results,
        "speedup": round(results["ray"]["episodes_per_s"]
                         / results["serial"]["episodes_per_s"], 2),
        "episodes_differing": len(differing),
        "load_average_after": round(_load_average(), 2),
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="experiment-bench",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("config", type=Path, help="the experiment YAML")
    parser.add_argument("--out", type=Path,
                        help="directory for the two runs (default: a new temporary one); "
                             "must not hold earlier runs")
    parser.add_argument("--workers", type=int, help="CPUs of the Ray instance (default: all)")
    args = parser.parse_args(argv)
    try:
        config = ExperimentConfig.from_yaml(args.config)
    except ConfigError as err:
        parser.error(str(err))
    out = args.out or Path(tempfile.mkdtemp(prefix="experiment-bench-"))
    if any((out / name / "results.jsonl").exists() for name in ("serial", "ray")):
        parser.error(f"{out} holds earlier runs (they would be resumed, not timed)")
    result = bench(config, out, args.workers)
    (out / "bench.json").write_text(json.dumps(result, indent=1) + "\n")
    s, r = result["serial"], result["ray"]
    print(f"{config.name}: {s['episodes']} episodes; serial {s['episodes_per_s']:.2f} "
          f"episodes/s ({s['wall_s']:.1f} s), Ray {r['episodes_per_s']:.2f} episodes/s "
          f"({r['wall_s']:.1f} s on {r['workers']} workers, +{r['startup_s']:.1f} s start-up): "
          f"{result['speedup']:.2f}x; {result['episodes_differing']} episodes differ; load "
          f"average {s['load_average_before']:.1f} before, {result['load_average_after']:.1f} "
          f"after ({out / 'bench.json'})")
    return 0 if result["episodes_differing"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
