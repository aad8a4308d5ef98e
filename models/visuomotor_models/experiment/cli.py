"""Run a sim-to-real experiment described in a YAML file, in parallel on Ray, and report it.

    experiment models/config/experiments/policy_eval.yaml          # local Ray, every core
    experiment my_experiment.yaml --address 10.0.0.5:6379          # an existing cluster
    experiment my_experiment.yaml --serial                         # one process, no Ray
    experiment my_experiment.yaml --report-only                    # re-plot what is on disk

Results stream to ``<out>/results.jsonl`` as episodes finish; running the same command
again resumes where an interrupted run stopped (finished episodes are never run twice, see
``visuomotor_models.experiment.plan``). The report is ``<out>/report.md`` and the
self-contained ``<out>/report.html`` (figures in ``<out>/figures``). The same config and
seeds give the same table, whatever the number of workers.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections import Counter
from pathlib import Path

from visuomotor_models.experiment.config import (
    ConfigError,
    ExperimentConfig,
    randomization_yaml,
    resolve_conditions,
)
from visuomotor_models.experiment.plan import build_plan, policy_hashes
from visuomotor_models.experiment.report import RunInfo, markdown_tables, write_report
from visuomotor_models.experiment.store import ResultStore

DEFAULT_RUNS = Path("runs") / "experiments"


def make_executor(serial: bool, address: str | None, workers: int | None):
    from visuomotor_models.experiment.executors import RayExecutor, SerialExecutor

    if serial:
        return SerialExecutor()
    return RayExecutor(address=address, num_cpus=workers)


def run(config: ExperimentConfig, out_dir: Path, *, serial: bool = False,
        address: str | None = None, workers: int | None = None, limit: int | None = None,
        report_only: bool = False, progress: bool | None = None, command: str = "",
        log=print) -> tuple[int, dict, RunInfo]:
    """Plan, run what is not on disk yet, write the report; returns (exit status, report
    paths, what this invocation ran).

    Exit status: 0 when every episode finished, 1 when some broke or are still to run
    (``limit``), 130 when interrupted.
    """
    conditions = resolve_conditions(config)
    hashes = policy_hashes(config)
    plan = build_plan(config, conditions, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if config.source is not None:
        (out_dir / "config.yaml").write_text(config.source.read_text())
    (out_dir / "profiles.yaml").write_text(
        "# Every condition of the experiment as a randomization profile (generated).\n"
        + randomization_yaml(conditions))
    info = RunInfo(command=command)
    status = 0
    with ResultStore(out_dir) as store:
        if store.torn_lines:
            log(f"{store.path}: dropped a torn last line (an interrupted write)")
        todo = [t for t in plan.tasks.values() if not store.done(t.id)]
        finished = len(plan.tasks) - len(todo)
        if limit is not None:
            todo = todo[:limit]
        log(f"experiment '{config.name}': {len(plan.tasks)} episodes, {finished} on disk in "
            f"{out_dir}, {0 if report_only else len(todo)} to run")
        if todo and not report_only:
            started = time.perf_counter()
            executor = make_executor(serial, address, workers)
            info.startup_s = time.perf_counter() - started
            info.executor, info.workers = executor.name, executor.workers
            log(f"running on {executor.name} with {executor.workers} "
                f"worker{'s' if executor.workers != 1 else ''}")
            from tqdm import tqdm

            bar = tqdm(total=len(plan.tasks), initial=finished, unit="episode",
                       disable=(not progress) if progress is not None else None,
                       dynamic_ncols=True, smoothing=0.1)
            outcome = Counter()

            def on_row(row: dict) -> None:
                store.append(row)
                info.episodes_run += 1
                info.nodes[row.get("node_id")] += 1
                outcome["broke" if row.get("error") else
                        "success" if row["success"] else "fail"] += 1
                bar.set_postfix(outcome, refresh=False)
                bar.update(1)

            start = time.perf_counter()
            try:
                executor.run(todo, on_row)
            except KeyboardInterrupt:
                status = 130
                log(f"\ninterrupted: {info.episodes_run} episodes of this run are on disk; "
                    f"the same command resumes")
            finally:
                info.wall_s = time.perf_counter() - start
                bar.close()
                executor.close()
        rows = dict(store.rows)
    remaining = [t for t in plan.tasks if t not in rows or rows[t].get("error") is not None]
    if status == 0 and remaining:
        status = 1
    paths = write_report(out_dir, config, plan, rows, info, hashes)
    if info.episodes_run:
        log(f"{info.episodes_run} episodes in {info.wall_s:.1f} s = "
            f"{info.episodes_run / max(info.wall_s, 1e-9):.2f} episodes/s "
            f"({info.executor}, {info.workers} workers, {len(info.nodes)} node(s))")
    log(markdown_tables(out_dir))
    log(f"\nreport: {paths['markdown']}\n        {paths['html']}")
    if remaining:
        log(f"{len(remaining)} episodes not finished (broken or not yet run): run the same "
            f"command again to run them")
    return status, paths, info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="experiment", description=__doc__.split("\n\n")[0],
        epilog="Config format: see visuomotor_models/experiment/config.py; examples in "
               "models/config/experiments/.")
    parser.add_argument("config", type=Path, help="the experiment YAML")
    parser.add_argument("--out", type=Path,
                        help=f"run directory (default {DEFAULT_RUNS}/<name>); an existing one "
                             f"is resumed")
    parser.add_argument("--address",
                        help="join this running Ray cluster (HOST:PORT or 'auto') instead of "
                             "starting a local one")
    parser.add_argument("--workers", type=int,
                        help="CPUs of the local Ray instance (default: every core)")
    parser.add_argument("--serial", action="store_true",
                        help="run every episode in this process, without Ray")
    parser.add_argument("--limit", type=int,
                        help="run at most this many episodes now (the rest on a later run)")
    parser.add_argument("--report-only", action="store_true",
                        help="run nothing; write the report from the results on disk")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.workers is not None and args.workers < 1:
        parser.error("--workers must be >= 1")
    if args.limit is not None and args.limit < 0:
        parser.error("--limit must be >= 0")
    if args.serial and args.address:
        parser.error("--serial and --address exclude each other")
    try:
        config = ExperimentConfig.from_yaml(args.config)
    except ConfigError as err:
        parser.error(str(err))
    out = args.out or DEFAULT_RUNS / config.name
    command = "experiment " + shlex.join(sys.argv[1:] if argv is None else argv)
    try:
        status, _, _ = run(config, out, serial=args.serial, address=args.address,
                        workers=args.workers, limit=args.limit, report_only=args.report_only,
                        progress=False if args.no_progress else None, command=command)
    except ConfigError as err:
        print(f"experiment: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        print(f"experiment: {err}", file=sys.stderr)
        return 2
    return status


if __name__ == "__main__":
    raise SystemExit(main())
