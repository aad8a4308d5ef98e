"""Helpers every visuomotor node shares: parameter schemas, QoS, stamps, diagnostics.

Nodes stay thin: they declare their parameters from one schema
(:class:`visuomotor_core.params.ParamSpec`), convert messages to numpy, call the
ROS-free core and publish. What they have in common lives here once.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.exceptions import InvalidHandle, ParameterException
from rclpy.executors import (
    Executor,
    ExternalShutdownException,
    MultiThreadedExecutor,
    SingleThreadedExecutor,
)
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)

from visuomotor_core.params import ParamSpec, validate
from visuomotor_core.rt_loop import LoopLock, set_parent_death_signal
from visuomotor_ros.callback_guard import CallbackGuard

#: Camera images and camera info: best effort, keep only the newest frame so a
#: slow consumer drops frames instead of building a backlog.
SENSOR_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=qos_profile_sensor_data.reliability,
    durability=qos_profile_sensor_data.durability,
)
#: Streams where only the latest sample matters but each should arrive (joint
#: states, targets, commands).
LATEST_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE
)
#: Latched topics such as /robot_description.
LATCHED_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
#: Ordinary reliable topics (diagnostics, status, markers).
DEFAULT_QOS = 10

_RCLError = _rclpy.RCLError  # raised by rcl calls on a context already shut down

_PARAM_TYPES = {
    bool: Parameter.Type.BOOL,
    int: Parameter.Type.INTEGER,
    float: Parameter.Type.DOUBLE,
    str: Parameter.Type.STRING,
}


def time_to_seconds(stamp: Time) -> float:
    """builtin_interfaces/Time -> seconds (float)."""
    return stamp.sec + stamp.nanosec * 1e-9


def seconds_to_time(seconds: float) -> Time:
    """Seconds (float, >= 0) -> builtin_interfaces/Time."""
    sec = int(seconds)
    nanosec = round((seconds - sec) * 1e9)
    if nanosec >= 1_000_000_000:
        sec, nanosec = sec + 1, nanosec - 1_000_000_000
    return Time(sec=sec, nanosec=nanosec)


def now_seconds(node: Node) -> float:
    """The node's clock (ROS time: sim time when use_sim_time is set) in seconds."""
    return node.get_clock().now().nanoseconds * 1e-9


class ThrottledWarnings:
    """Logs each kind of warning at most once per ``period`` s of wall time, saying how
    many of that kind were suppressed since the last one."""

    def __init__(self, logger: Any, period: float = 1.0) -> None:
        self._logger = logger
        self._period = period
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warn(self, key: str, text: str, period: float | None = None) -> bool:
        """Log ``text`` unless a ``key`` warning was logged recently; True when logged."""
        now = time.monotonic()
        if now - self._last.get(key, -np.inf) < (period or self._period):
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False
        suppressed = self._suppressed.pop(key, 0)
        self._last[key] = now
        more = f" ({suppressed} more since the last such warning)" if suppressed else ""
        self._logger.warning(text + more)
        return True


class JointOrder:
    """Maps the ``name`` list of a message (JointState, JointTargets) onto a fixed joint order.

    ``index(names)`` returns the positions of ``joint_names`` in ``names`` (an int array to
    index the message's arrays with), or None when a joint is missing; the result is cached
    per name list, so a stream with a constant name list costs one tuple comparison.
    """

    def __init__(self, joint_names: Sequence[str]) -> None:
        self.joint_names = tuple(joint_names)
        self._names: tuple[str, ...] | None = None
        self._index: np.ndarray | None = None

    def index(self, names: Sequence[str]) -> np.ndarray | None:
        key = tuple(names)
        if key != self._names:
            self._names = key
            try:
                self._index = np.array([key.index(j) for j in self.joint_names])
            except ValueError:
                self._index = None
        return self._index

    def missing(self, names: Sequence[str]) -> list[str]:
        """The joints of this order absent from ``names``."""
        return sorted(set(self.joint_names) - set(names))


class OutputThread:
    """Publishes what a control loop announces, from a thread of its own.

    The loop calls :meth:`announce` (a set insertion and a condition notify, a few µs)
    and goes on; this thread wakes and calls ``publish(kinds)`` with every kind announced
    since its last call. An executor could do the publishing (a guard condition), but
    each of its wake-ups rebuilds the wait set of every entity of the process's nodes in
    Python, holding the GIL for hundreds of µs — at 100-200 wake-ups a second, the time
    the loop thread waits for the GIL. A plain thread blocked on a condition costs only
    the publishing.

    An exception from ``publish`` is logged on ``node``'s logger (throttled, counted in
    :attr:`guard`) and the thread goes on; once the node's context is shut down the
    thread ends quietly.
    """

    def __init__(self, node: Node, name: str,
                 publish: Callable[[frozenset[str]], None]) -> None:
        self._alive = node.context.ok
        self.guard = CallbackGuard(node.get_logger(), alive=self._alive)
        self._publish = self.guard(publish)
        self._due: set[str] = set()
        self._ready = threading.Condition(LoopLock())  # triggered by the loop's tick
        self._running = True
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def announce(self, kind: str = "") -> None:
        """Note ``kind`` as due and wake the thread (any thread may call it)."""
        with self._ready:
            self._due.add(kind)
            self._ready.notify()

    def stop(self, timeout: float = 2.0) -> None:
        """End the thread after the publication in progress (idempotent)."""
        with self._ready:
            self._running = False
            self._ready.notify()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._ready:
                while self._running and not self._due:
                    self._ready.wait()
                if not self._running:
                    return
                due, self._due = frozenset(self._due), set()
            if not self._alive():
                return
            self._publish(due)


class LatestMessageReader:
    """A subscription read on demand: :meth:`take_latest` hands the newest waiting message
    to ``callback``; no executor wakes for the messages in between.

    For a fast stream of which a node needs only the newest sample at its own, slower
    pace (1 kHz ``joint_states`` read once per camera frame): a subscription of the node
    itself would wake its executor for every message. The subscription belongs to a
    helper node, ``<node name>_<suffix>`` in the node's namespace, that no executor spins;
    the topic is ``topic`` resolved by ``node`` (its namespace and remappings). Use a
    KEEP_LAST ``qos`` of depth 1: the middleware then keeps only the newest message.
    The helper node has no parameter, logger or type-description services.

    Not thread-safe: call :meth:`take_latest` from one callback group of ``node``.
    """

    def __init__(self, node: Node, msg_type: type, topic: str, qos: QoSProfile,
                 callback: Callable[[Any], None], suffix: str) -> None:
        self._reader = Node(
            f"{node.get_name()}_{suffix}", namespace=node.get_namespace(),
            context=node.context, use_global_arguments=False, enable_rosout=False,
            start_parameter_services=False,
            parameter_overrides=[Parameter("start_type_description_service", value=False)])
        #: The subscription; its ``callback`` is the one :meth:`take_latest` calls.
        self.subscription = self._reader.create_subscription(
            msg_type, node.resolve_topic_name(topic), callback, qos)
        self._wait_set: Any = None

    def wait(self, timeout: float) -> bool:
        """Block (without the GIL) until a message is waiting, at most ``timeout`` s; True
        when one is. False when the reader is destroyed or its context shut down, after
        at most 10 ms (so that a caller waiting in a loop does not spin meanwhile).
        """
        subscription = self.subscription
        try:
            if self._wait_set is None:
                self._wait_set = _rclpy.WaitSet(1, 0, 0, 0, 0, 0,
                                                self._reader.context.handle)
            wait_set = self._wait_set
            wait_set.clear_entities()
            with subscription.handle:
                wait_set.add_subscription(subscription.handle)
                wait_set.wait(max(0, round(timeout * 1e9)))
            return bool(wait_set.is_ready("subscription", 0))
        except (InvalidHandle, _RCLError):
            time.sleep(min(timeout, 0.01))  # shutting down: the caller re-checks and ends
            return False

    def take_latest(self) -> bool:
        """Take every waiting message and call the callback with the newest; False when
        none was waiting (or the reader is destroyed)."""
        subscription = self.subscription
        latest = None
        try:
            with subscription.handle:
                while True:
                    taken = subscription.handle.take_message(subscription.msg_type,
                                                             subscription.raw)
                    if taken is None:
                        break
                    latest = taken[0]
        except InvalidHandle:
            return False
        if latest is None:
            return False
        subscription.callback(latest)
        return True

    def destroy(self) -> None:
        """Destroy the helper node and with it the subscription."""
        self._reader.destroy_node()


def _descriptor(spec: ParamSpec) -> ParameterDescriptor:
    unit = f" [{spec.unit}]" if getattr(spec, "unit", "") else ""
    descriptor = ParameterDescriptor(
        name=spec.name,
        description=f"{spec.description}{unit}",
        read_only=bool(getattr(spec, "read_only", False)),
        dynamic_typing=isinstance(spec.default, (list, tuple)),
    )
    low, high = getattr(spec, "min", None), getattr(spec, "max", None)
    if spec.type is float and low is not None and high is not None:
        descriptor.floating_point_range = [
            FloatingPointRange(from_value=float(low), to_value=float(high), step=0.0)
        ]
    elif spec.type is int and low is not None and high is not None:
        descriptor.integer_range = [IntegerRange(from_value=int(low), to_value=int(high), step=0)]
    return descriptor


def declare_schema(node: Node, schema: Iterable[ParamSpec]) -> dict[str, Any]:
    """Declare every parameter of ``schema`` on ``node``; return {name: value}.

    Values given at start-up (YAML, launch, overrides) are validated against the
    schema; an invalid one raises ValueError naming the parameter, so a node
    fails at configure time instead of running with a bad value.
    """
    values: dict[str, Any] = {}
    for spec in schema:
        node.declare_parameter(spec.name, spec.default, _descriptor(spec))
        value = node.get_parameter(spec.name).value
        ok, reason = validate(spec, value)
        if not ok:
            raise ValueError(f"parameter '{spec.name}': {reason}")
        values[spec.name] = value
    return values


def on_set_validated(
    node: Node,
    schema: Iterable[ParamSpec],
    apply: Callable[[Mapping[str, Any]], tuple[bool, str]],
) -> None:
    """Validate live parameter changes against ``schema``, then hand them to ``apply``.

    ``apply`` receives {name: value} for the changed parameters and returns
    (accepted, reason); a change is refused as a whole when any value is invalid
    or ``apply`` refuses it, and the reason is returned to the caller
    (``ros2 param set`` prints it).
    """
    specs = {spec.name: spec for spec in schema}

    def callback(parameters: Sequence[Parameter]) -> SetParametersResult:
        changes: dict[str, Any] = {}
        for parameter in parameters:
            spec = specs.get(parameter.name)
            if spec is None:
                continue  # e.g. use_sim_time, handled by rclpy
            if getattr(spec, "read_only", False):
                return SetParametersResult(
                    successful=False, reason=f"'{parameter.name}' is read-only"
                )
            ok, reason = validate(spec, parameter.value)
            if not ok:
                return SetParametersResult(
                    successful=False, reason=f"'{parameter.name}': {reason}"
                )
            changes[parameter.name] = parameter.value
        if not changes:
            return SetParametersResult(successful=True)
        ok, reason = apply(changes)
        return SetParametersResult(successful=ok, reason=reason)

    node.add_on_set_parameters_callback(callback)


class DiagnosticsReporter:
    """Publishes one DiagnosticStatus for a node on /diagnostics, rate-limited.

    ``report`` may be called at any rate; a message goes out at most every
    ``period`` seconds of the node's clock (or at once when ``force``).
    """

    LEVELS: ClassVar[dict[str, bytes]] = {
        "ok": DiagnosticStatus.OK,
        "warn": DiagnosticStatus.WARN,
        "error": DiagnosticStatus.ERROR,
        "stale": DiagnosticStatus.STALE,
    }

    def __init__(self, node: Node, name: str, hardware_id: str = "", period: float = 1.0):
        self._node = node
        self._name = f"{node.get_name()}: {name}"
        self._hardware_id = hardware_id
        self._period = period
        self._last = float("-inf")
        self._publisher = node.create_publisher(DiagnosticArray, "/diagnostics", DEFAULT_QOS)

    def due(self) -> bool:
        """Whether :meth:`report` would publish now (so callers build values only then)."""
        return self._node.get_clock().now().nanoseconds * 1e-9 - self._last >= self._period

    def report(
        self, level: str, message: str, values: Mapping[str, Any], force: bool = False
    ) -> bool:
        """Publish when due; returns True when a message was published."""
        now_ns = self._node.get_clock().now().nanoseconds
        if not force and now_ns * 1e-9 - self._last < self._period:
            return False
        self._last = now_ns * 1e-9
        status = DiagnosticStatus(
            level=self.LEVELS[level],
            name=self._name,
            message=message,
            hardware_id=self._hardware_id,
            values=[KeyValue(key=k, value=_format(v)) for k, v in values.items()],
        )
        array = DiagnosticArray(status=[status])
        array.header.stamp = self._node.get_clock().now().to_msg()
        self._publisher.publish(array)
        return True


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


#: Longest wait of a node process's executor, s: how late it may notice a stop signal.
STOP_POLL_S = 0.25
#: Seconds a node process may take to end after its first SIGINT/SIGTERM (launch sends
#: SIGTERM after 5 s and SIGKILL after 15 s; the multi-process bringup SIGKILLs after 10 s).
SHUTDOWN_TIMEOUT = 8.0


def _stop_on_signals() -> threading.Event:
    """Make SIGINT and SIGTERM set the returned event instead of raising.

    rclpy.init installs its own handler in front of these and chains to them: the
    signal shuts the context down (the executor stops spinning) and then lands here,
    so no KeyboardInterrupt can surface in the middle of construction, a callback or
    destruction, however many signals arrive (a terminal's Ctrl-C reaches the whole
    process group, and launch then sends its own SIGINT).
    """
    stop = threading.Event()

    def handler(signum: int, frame: object) -> None:
        if not stop.is_set():
            # Bounded shutdown: should the process still be here SHUTDOWN_TIMEOUT s after
            # the first signal (a callback or a native teardown call that does not return),
            # faulthandler's own thread, which needs no GIL, prints every thread's stack
            # and ends the process with status 1, instead of waiting for a SIGKILL that
            # says nothing about where it hung.
            faulthandler.dump_traceback_later(SHUTDOWN_TIMEOUT, exit=True)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, handler)
    # The launcher's death (``ros2 launch`` itself gets a SIGTERM or a SIGKILL, which
    # upstream launch does not pass on to its processes) ends this process like a SIGTERM.
    parent = os.getppid()
    if set_parent_death_signal(signal.SIGTERM) and os.getppid() != parent:
        stop.set()  # the parent died before the request took effect
    return stop


def run_nodes(
    build: Callable[[], Sequence[Node]], args: list[str] | None = None, threads: int = 1
) -> None:
    """Console-script body of a process holding one or more nodes.

    Initialises rclpy, calls ``build()`` for the nodes, spins them in one executor
    until shutdown and destroys them. ``threads`` > 1 spins a MultiThreadedExecutor
    so callback groups run concurrently; 1 uses a SingleThreadedExecutor (the
    lower-overhead choice when the work is serial).

    SIGINT or SIGTERM (to this process or its whole group, at any moment,
    construction included) ends the process with exit status 0 and no traceback.
    Bad parameters or an unusable resource at construction (a parameter out of its
    declared range or of the wrong type, a missing model) end it with a one-line
    error and status 1.
    """
    stop = _stop_on_signals()
    rclpy.init(args=args)
    nodes: list[Node] = []
    executor: Executor | None = None
    try:
        try:
            nodes = list(build())
        except Exception as error:
            if stop.is_set() or not rclpy.ok():
                return  # interrupted while constructing: the signal, not the error, ends it
            if isinstance(error, (RuntimeError, ValueError, ParameterException)):
                raise SystemExit(f"{error}") from None
            raise
        if stop.is_set():
            return
        executor = (
            SingleThreadedExecutor() if threads == 1 else MultiThreadedExecutor(num_threads=threads)
        )
        for node in nodes:
            executor.add_node(node)
        try:
            # Not executor.spin(): rclpy's signal handler is meant to wake the executor's
            # wait, but now and then (about one stop in twenty under the test suite) the
            # executor went back to an endless wait after a SIGINT and the process hung
            # until the bounded shutdown ended it with status 1 (faulthandler showed the
            # main thread in wait_for_ready_callbacks). A wait that times out every
            # STOP_POLL_S lets the signal's own flag end the loop: at most STOP_POLL_S
            # late, for a few executor wake-ups a second.
            while not stop.is_set() and executor.context.ok():
                executor.spin_once(timeout_sec=STOP_POLL_S)
        except ExternalShutdownException:
            pass
        except (_RCLError, InvalidHandle):
            # The signal shut the context down while the executor was between its ok()
            # check and building its wait set (or taking from a destroyed entity).
            if not stop.is_set():
                raise
    finally:
        _close(executor, nodes)
        if stop.is_set():
            # Stopping already: more signals (the rest of a Ctrl-C burst, launch's own
            # SIGINT) must not kill the interpreter while it finalizes.
            for signum in (signal.SIGINT, signal.SIGTERM):
                signal.signal(signum, signal.SIG_IGN)


def _close(executor: Executor | None, nodes: Sequence[Node]) -> None:
    """Let running callbacks finish, shut the executor down, destroy the nodes, then rclpy.

    The worker threads of a MultiThreadedExecutor go first: a callback still running
    when Executor.shutdown() destroys the executor's guard condition fails on it
    ("cannot use Destroyable because destruction was requested"), and Executor.shutdown
    does not wait for running callbacks itself.
    """
    if executor is not None:
        pool = getattr(executor, "_executor", None)  # MultiThreadedExecutor's worker threads
        if pool is not None:
            pool.shutdown(wait=True)
        executor.shutdown()
    for node in reversed(nodes):
        node.destroy_node()
    rclpy.try_shutdown()


def run_node(factory: Callable[[], Node], args: list[str] | None = None, threads: int = 1) -> None:
    """Console-script body of a one-node process: :func:`run_nodes` with ``[factory()]``."""
    run_nodes(lambda: [factory()], args, threads)
