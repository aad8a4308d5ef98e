"""Where episodes run: serially in this process, or as Ray tasks on every core of a cluster.

Both take the tasks in plan order and hand each finished row to ``on_row`` as soon as it
arrives (in completion order), so results stream to disk and a progress bar moves.

Ray: without an address a local instance is started with every core of this machine and
no dashboard (nothing to set up); ``address`` joins a running cluster (``ray start --head``
on one machine, ``ray start --address HEAD:6379`` on the others, each started inside the
project's environment: ``scripts/with-env.sh ray start ...``; every node needs the
repository and its environment at the same path). One episode is one task of one CPU,
spread over the nodes; at most two per CPU are in flight, so an interrupt loses little.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Iterable
from dataclasses import asdict

from visuomotor_models.experiment.episodes import run_task
from visuomotor_models.experiment.plan import Task

RowCallback = Callable[[dict], None]


class SerialExecutor:
    """Every episode in this process, one after another (the baseline for throughput)."""

    name = "serial"
    workers = 1

    def run(self, tasks: Iterable[Task], on_row: RowCallback) -> None:
        node = socket.gethostname()
        for task in tasks:
            row = run_task(task)
            row.update(node_id=f"local:{node}", node_ip="127.0.0.1")
            on_row(row)

    def close(self) -> None:
        pass


def _run_on_node(task: Task) -> dict:
    """The Ray task: run the episode and say which node ran it."""
    import ray

    row = run_task(task)
    row.update(node_id=ray.get_runtime_context().get_node_id(),
               node_ip=ray.util.get_node_ip_address())
    return row


def _warm_up() -> int:
    """Import what an episode needs (PyBullet, ONNX Runtime, the sim), so that the first
    episodes of a worker are not slowed by it; returns the worker's pid."""
    import time

    import visuomotor_models.evaluate_policy  # noqa: F401 - the sim, expert, policy runtime

    time.sleep(0.2)  # held long enough that every CPU gets a worker of its own
    return os.getpid()


def ray_missing_message() -> str:
    return ("the experiment runner needs Ray: install the experiment tooling with "
            "`pip install -c requirements/constraints.txt -r requirements/experiment.txt` "
            "(make setup does), or run with --serial")


class RayExecutor:
    """Episodes as Ray tasks (see the module docstring).

    Args:
        address: a running cluster's address (``HOST:PORT`` or ``auto``); None starts a local
            instance.
        num_cpus: CPUs of the local instance (default: every core); ignored with an address.
    """

    name = "ray"
    IN_FLIGHT_PER_CPU = 2

    def __init__(self, address: str | None = None, num_cpus: int | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise RuntimeError(ray_missing_message()) from None
        self._ray = ray
        self._started = not ray.is_initialized()
        if self._started:
            options = dict(logging_level=logging.WARNING, log_to_driver=False)
            if address:
                ray.init(address=address, **options)
            else:
                ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False,
                         object_store_memory=200 * 2**20, **options)
        self.workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self._remote = ray.remote(num_cpus=1, max_retries=2,
                                  scheduling_strategy="SPREAD")(_run_on_node)
        warm_up = ray.remote(num_cpus=1, scheduling_strategy="SPREAD")(_warm_up)
        ray.get([warm_up.remote() for _ in range(self.workers)])

    def nodes(self) -> list[str]:
        return [n["NodeID"] for n in self._ray.nodes() if n.get("Alive")]

    def run(self, tasks: Iterable[Task], on_row: RowCallback) -> None:
        ray = self._ray
        queue = iter(tasks)
        pending: dict = {}
        window = self.IN_FLIGHT_PER_CPU * self.workers

        def fill() -> None:
            while len(pending) < window:
                task = next(queue, None)
                if task is None:
                    return
                pending[self._remote.remote(task)] = task

        try:
            fill()
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    task = pending.pop(ref)
                    try:
                        row = ray.get(ref)
                    except ray.exceptions.RayError as err:  # a worker or node died
                        row = asdict(task)
                        del row["terms"], row["settings"]
                        row.update(error=f"ray: {type(err).__name__}: {err}"[:2000],
                                   node_id=None, node_ip=None)
                    on_row(row)
                fill()
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)

    def close(self) -> None:
        if self._started:
            self._ray.shutdown()
