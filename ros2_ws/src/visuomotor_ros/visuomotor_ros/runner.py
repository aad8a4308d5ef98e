"""In-process runner: the graph's nodes in one process on one executor.

Same node classes and the same parameter files as the launch files (both read
:mod:`visuomotor_ros.graph`), so CI and ``make demo`` exercise what
``ros2 launch`` starts, without needing ``launch`` itself (not on PyPI).
A MultiThreadedExecutor runs the callbacks; each node puts its time-critical
work (the controller loop, the sim's physics thread) in its own callback group
or thread so a slow callback elsewhere cannot delay it.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import rclpy
from rclpy.context import Context
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter

from visuomotor_ros import graph


def _factory(path: str) -> type[Node]:
    module_name, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


def _parameters(values: Mapping[str, Any]) -> list[Parameter]:
    return [Parameter(name, value=value) for name, value in values.items()]


class GraphRunner:
    """Starts the graph's nodes in this process and spins them in a background thread.

    Args:
        sim: include the sim node (False: robot graph, topics from real drivers).
        use_sim_time: every node follows ``/clock``.
        overrides: per role (``"sim"``, ``"encoder"``, ...) parameter values that take
            precedence over the YAML files.
        roles: start only these roles (default: all of the graph's).
        num_threads: executor threads.
    """

    def __init__(
        self,
        sim: bool = True,
        use_sim_time: bool = True,
        overrides: Mapping[str, Mapping[str, Any]] | None = None,
        roles: Sequence[str] | None = None,
        num_threads: int = 6,
    ) -> None:
        self.specs = [s for s in graph.nodes(sim) if roles is None or s.role in roles]
        self.use_sim_time = use_sim_time
        self.overrides = {role: dict(values) for role, values in (overrides or {}).items()}
        self.num_threads = num_threads
        self.context = Context()
        self.nodes: dict[str, Node] = {}
        self.executor: MultiThreadedExecutor | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> GraphRunner:
        """Initialise rclpy with the parameter files, create the nodes, start spinning."""
        args = ["--ros-args"]
        for spec in self.specs:
            args += ["--params-file", str(graph.params_path(spec))]
        rclpy.init(args=args, context=self.context)
        self.executor = MultiThreadedExecutor(num_threads=self.num_threads, context=self.context)
        try:
            for spec in self.specs:
                values = {"use_sim_time": self.use_sim_time, **self.overrides.get(spec.role, {})}
                node = _factory(spec.factory)(
                    context=self.context, parameter_overrides=_parameters(values)
                )
                self.nodes[spec.role] = node
                self.executor.add_node(node)
        except Exception:
            self.stop()
            raise
        self._thread = threading.Thread(target=self._spin, name="graph-executor", daemon=True)
        self._thread.start()
        return self

    def add_node(self, node: Node) -> None:
        """Spin an extra node (a supervisor, a recorder) on the same executor."""
        assert self.executor is not None, "start() first"
        self.executor.add_node(node)

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except ExternalShutdownException:
            pass

    def stop(self) -> None:
        """Destroy the nodes and shut the context down (idempotent)."""
        if self.executor is not None:
            self.executor.shutdown(timeout_sec=2.0)
        for node in reversed(list(self.nodes.values())):
            try:
                node.destroy_node()
            except Exception:  # noqa: BLE001 - teardown must reach every node
                pass
        self.nodes.clear()
        rclpy.try_shutdown(context=self.context)
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    def __enter__(self) -> GraphRunner:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
