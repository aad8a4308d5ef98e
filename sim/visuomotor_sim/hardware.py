"""The PyBullet world as the controller's hardware: read, write and one physics step per tick.

:class:`SimHardware` implements :class:`visuomotor_core.hardware.Hardware` for
the controller's loop in the robot process (physics, camera and controller in
one process; see DESIGN.md, "The loop"). Each control tick the loop reads the
measured joint state, writes the command, and :meth:`SimHardware.cycle` steps
the physics by one control period and does whatever is due at the new sim time:
a camera frame request (rendered by :class:`~visuomotor_sim.render_worker.RenderWorker`),
an observer joint state, a clock tick, the task's status. ROS-free: the sim
node publishes what this class produces, through ``on_output``.

Pacing. With ``lockstep`` the loop runs as fast as it can on sim time, and
after each camera frame at ``t_k`` the physics stops at ``t_k + lockstep_latency``
until the policy's joint targets for that frame (stamped ``t_k``) have arrived,
at most ``lockstep_timeout`` s of wall time. The loop's own thread waits for
them through the answer source its controller sets
(:meth:`SimHardware.set_answer_source`): it hands the targets to the controller
before the physics goes on, so the next tick acts on them whatever the order in
which the process's threads run, and no executor wakes for them. Until then the
controller leaves them waiting (:meth:`SimHardware.answer_held`): they take
effect exactly ``lockstep_latency`` after their frame, however fast they came.
Without a source, :meth:`SimHardware.frame_answered` (any thread) reports
answers; after ``MAX_UNANSWERED`` frames in a row without an answer (no policy
running) it waits only on every ``PROBE_EVERY``-th frame until an answer comes
again. The perception latency the robot sees is then ``lockstep_latency`` of sim
time whatever the machine's speed. Without ``lockstep`` the
loop paces the ticks on the wall clock and sim time advances one control period
per tick (a real-time factor of 1 as long as no tick is missed).

Without a command for ``command_timeout`` s of sim time (controller inactive or
stopped), the joints hold their position, as a robot's own safety layer would.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from visuomotor_core.hardware import JointSample
from visuomotor_core.limits import all_true
from visuomotor_core.rt_loop import LoopLock, waiting_in_loop
from visuomotor_sim.randomization import DomainRandomizer, RandomizationProfile, load_profiles
from visuomotor_sim.render_worker import Frame, RenderWorker
from visuomotor_sim.robot import COMMAND_MODES
from visuomotor_sim.task import ReachTask, TaskConfig, TaskStatus
from visuomotor_sim.world import ArmWorld, WorldConfig

#: Frames in a row without the policy's answer after which lockstep stops waiting.
MAX_UNANSWERED = 3
#: Without answers, lockstep still waits on every this many frames (see _wait_for_answer).
PROBE_EVERY = 10
#: Longest single wait on the answer source, s (a close() is seen within it).
ANSWER_POLL_S = 0.05
#: Slack (s) when comparing sim times with stamps that went through a message (ns).
TIME_EPS = 1e-9
#: Seeds an episode accepts (ResetEpisode.seed is uint32 on the wire).
MAX_SEED = 2**32 - 1


def _ns(seconds: float) -> int:
    return round(seconds * 1e9)


@dataclass(frozen=True)
class SimHardwareConfig:
    """Rates and pacing of the simulated robot (rates in Hz of sim time, times in s).

    Attributes:
        control_rate_hz: rate of :meth:`SimHardware.cycle` calls; the physics steps
            ``physics_hz / control_rate_hz`` times per cycle (an integer).
        physics_hz: physics rate.
        camera_rate_hz: camera frame rate.
        joint_state_rate_hz: observer joint states (``joint_states``) rate.
        clock_rate_hz: ``/clock`` rate.
        status_rate_hz: task status rate (the rate the dwell is checked at).
        lockstep: wait for the policy's answer to each frame (see the module docstring).
        lockstep_latency: perception latency modelled in lockstep, s of sim time.
        lockstep_timeout: longest wait for one answer, s of wall time.
        command_timeout: hold position after this long without a command.
    """

    control_rate_hz: float = 1000.0
    physics_hz: float = 1000.0
    camera_rate_hz: float = 20.0
    joint_state_rate_hz: float = 100.0
    clock_rate_hz: float = 200.0
    status_rate_hz: float = 20.0
    lockstep: bool = True
    lockstep_latency: float = 0.005
    lockstep_timeout: float = 1.0
    command_timeout: float = 0.1

    def __post_init__(self) -> None:
        for name in ("control_rate_hz", "physics_hz", "camera_rate_hz", "joint_state_rate_hz",
                     "clock_rate_hz", "status_rate_hz", "lockstep_timeout", "command_timeout"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0.0):
                raise ValueError(f"{name} must be > 0, got {value!r}")
        if not (math.isfinite(self.lockstep_latency) and self.lockstep_latency >= 0.0):
            raise ValueError(f"lockstep_latency must be >= 0 s, got {self.lockstep_latency!r}")
        ratio = self.physics_hz / self.control_rate_hz
        if ratio < 1.0 - 1e-9 or abs(ratio - round(ratio)) > 1e-6:
            raise ValueError(
                f"the physics rate ({self.physics_hz:g} Hz) must be an integer multiple of the "
                f"control rate ({self.control_rate_hz:g} Hz)"
            )

    @property
    def steps_per_cycle(self) -> int:
        return round(self.physics_hz / self.control_rate_hz)


@dataclass
class SimCounters:
    """What the simulated robot counted since start-up (read by diagnostics and tests)."""

    steps: int = 0
    cycles: int = 0
    commands: int = 0
    rejected: int = 0
    clamped: int = 0
    holds: int = 0
    frames_requested: int = 0
    lockstep_waits: int = 0
    lockstep_timeouts: int = 0


@dataclass(frozen=True)
class Episode:
    """The running episode."""

    number: int
    seed: int
    profile: str
    target: np.ndarray


@dataclass(frozen=True)
class StatusSnapshot:
    """The task's status at sim time ``time`` (s) with the target and grasp point (3,), m."""

    episode: int
    status: TaskStatus
    time: float
    target: np.ndarray
    grasp: np.ndarray


#: Kinds of output :class:`SimHardware` announces through ``on_output``.
OUTPUTS = ("joint_state", "clock", "status")


class SimHardware:
    """PyBullet arm + camera + reach task behind the controller's hardware seam.

    Args:
        config: rates and pacing.
        world_config: the world (physics rate, camera, scene).
        task_config: tolerance, dwell, timeout of the reach task.
        profiles: randomization profiles by name (default: the sim's YAML, read once).
        on_output: called (in the loop thread; must only hand work over, e.g. trigger
            a guard condition) with the name of an output that became due (``OUTPUTS``).
        renderer: start the render worker (False: no camera, for controller-only use).
    """

    def __init__(
        self,
        config: SimHardwareConfig,
        world_config: WorldConfig | None = None,
        task_config: TaskConfig | None = None,
        profiles: Mapping[str, RandomizationProfile] | None = None,
        on_output: Callable[[str], None] | None = None,
        renderer: bool = True,
    ) -> None:
        world_config = world_config or WorldConfig(physics_hz=config.physics_hz)
        if abs(world_config.physics_hz - config.physics_hz) > 1e-9:
            raise ValueError("world and hardware disagree on the physics rate")
        self.config = config
        #: The arm joints, in the robot description's order.
        self.joint_names: tuple[str, ...] = world_config.description.arm_joints
        self.lockstep = config.lockstep
        self.counters = SimCounters()
        self.profiles = dict(profiles) if profiles is not None else load_profiles_default()
        self.world = ArmWorld(world_config)
        self.task = ReachTask(task_config or TaskConfig(), grasp_point=self.world.grasp_point,
                              effort=lambda: self.world.effort_integral)
        self.renderer = RenderWorker(world_config) if renderer else None
        self.on_output = on_output or (lambda kind: None)
        n = len(self.joint_names)
        # Locks the loop's tick takes are LoopLocks (see visuomotor_core.rt_loop).
        self._lock = LoopLock()                # the world, the task, the episode
        # Sim time is kept in integer ns, so that stamps stay exact multiples of the
        # control period (summing float periods drifts by ~0.3 µs an hour at 1 kHz).
        self._time_ns = 0
        self._time = 0.0
        self._dt_ns = _ns(1.0 / config.control_rate_hz)
        self._started = threading.Event()      # set by the first episode
        self._episode: Episode | None = None
        self._command = np.zeros(n)
        self._command_interface = "effort"
        self._last_command_time = -math.inf
        self._hold_q: np.ndarray | None = None
        self._epoch = 0                        # +1 at every episode reset
        self._read_epoch: int | None = None    # the epoch of the last read() (None: none yet)
        self._lower, self._upper = self.world.limits.lower, self.world.limits.upper
        self._bounds = {
            "effort": (-self.world.limits.effort, self.world.limits.effort),
            "position": (self._lower, self._upper),
            "velocity": (-self.world.limits.velocity, self.world.limits.velocity),
        }
        # Outputs for the node: copied here in the loop thread, read under _out_lock.
        self._out_lock = LoopLock()
        self._observed = JointSample.zeros(n)
        self._status: StatusSnapshot | None = None
        # Output schedules, ns of sim time: each output is due on its own grid k·period
        # (k >= 1: sim time 0 is before the first cycle).
        self._periods = {
            "joint_state": _ns(1.0 / config.joint_state_rate_hz),
            "clock": _ns(1.0 / config.clock_rate_hz),
            "status": _ns(1.0 / config.status_rate_hz),
            "frame": _ns(1.0 / config.camera_rate_hz),
        }
        self._next = dict(self._periods)
        # Lockstep: the frame awaiting the policy's answer.
        self._answered = threading.Condition(LoopLock())
        self._pending_frame = math.nan
        self._answered_stamp = -math.inf
        self._unanswered = 0
        self._skipped_waits = 0
        self._answer_source: Callable[[float], float] | None = None
        self._closed = False

    # ------------------------------------------------------------------ seam
    def now(self) -> float:
        """Sim time, s (monotonic across episodes)."""
        return self._time

    def read(self, sample: JointSample) -> None:
        with self._lock:
            q, qd, tau = self.world.joint_state()
            self._read_epoch = sample.epoch = self._epoch
        sample.position[:] = q
        sample.velocity[:] = qd
        sample.effort[:] = tau
        sample.stamp = self._time
        sample.sequence += 1

    def write(self, command: np.ndarray, interface: str) -> None:
        """Take the controller's command; non-finite or wrong-length commands are refused
        (the previous one stays), values beyond the robot's limits are clamped. A command
        written after an episode reset, when the last read() was before it, is dropped
        (counted as rejected: it was computed from the world before): the arm holds
        where the reset put it until a command from its new state arrives. Under the
        world's lock: a reset cannot land between the epoch check and the command."""
        with self._lock:
            self.counters.commands += 1
            stale = self._read_epoch is not None and self._read_epoch != self._epoch
            if stale or interface not in COMMAND_MODES \
                    or command.shape != self._command.shape \
                    or not all_true(np.isfinite(command)):
                self.counters.rejected += 1
                return
            low, high = self._bounds[interface]
            clamped = np.minimum(np.maximum(command, low, out=self._command), high,
                                 out=self._command)
            if not all_true(clamped == command):
                self.counters.clamped += 1
            self._command_interface = interface
            self._last_command_time = self._time

    def cycle(self) -> None:
        """Step the physics by one control period; do what is due at the new sim time.

        Before the first episode the world has not been reset: nothing is stepped and
        sim time stands still (in lockstep the call waits up to ``lockstep_timeout`` for
        the episode, so a free-running loop does not spin)."""
        if self._episode is None:
            if self.lockstep:
                self._started.wait(self.config.lockstep_timeout)
            return
        with self._lock:
            self._apply_command()
            self.world.step(self.config.steps_per_cycle)
            self._time_ns += self._dt_ns
            self._time = self._time_ns / 1e9
            self.counters.steps += self.config.steps_per_cycle
            self.counters.cycles += 1
            self._outputs_due(self._time_ns)
        if self.lockstep:
            self._wait_for_answer()

    def set_control_rate(self, rate_hz: float) -> None:
        """The controller's rate: one :meth:`cycle` per control period (ValueError unless
        the physics rate is an integer multiple of it)."""
        from dataclasses import replace

        config = replace(self.config, control_rate_hz=float(rate_hz))
        with self._lock:
            self.config = config
            self._dt_ns = _ns(1.0 / config.control_rate_hz)

    # ------------------------------------------------------------------ episodes
    @property
    def episode(self) -> Episode | None:
        return self._episode

    def reset_episode(self, seed: int, profile: str) -> Episode:
        """Draw the profile's dynamics and visuals with ``seed``; reset the world and task.

        Raises:
            ValueError: a seed outside [0, ``MAX_SEED``], an unknown profile.
        """
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) \
                or not 0 <= seed <= MAX_SEED:
            raise ValueError(f"seed {seed!r} is not an integer in [0, {MAX_SEED}]")
        if profile not in self.profiles:
            raise ValueError(f"unknown profile '{profile}' (known: {sorted(self.profiles)})")
        randomizer = DomainRandomizer(self.profiles[profile], np.random.default_rng(seed))
        dynamics, visual = randomizer.sample()
        with self._lock:
            target = self.world.reset(seed, dynamics=dynamics, visual=visual)
            number = 1 if self._episode is None else self._episode.number + 1
            self._episode = Episode(number, seed, profile, target.copy())
            self.task.reset(target, now=self._time)
            self._hold_q = None
            self._last_command_time = -math.inf
            self._epoch += 1
            if self.renderer is not None:
                self.renderer.episode(seed, dynamics, visual, target)
            # The camera runs free of episodes: the first frame comes on its grid, at the
            # first multiple of the camera period after now; the status at the next cycle.
            period = self._periods["frame"]
            self._next["frame"] = (self._time_ns // period + 1) * period
            self._next["status"] = self._time_ns
            with self._out_lock:
                self._status = None
        self._started.set()
        return self._episode

    def check_target(self, position: np.ndarray) -> str:
        """Why ``position`` (3,), m, base frame, cannot hold the target ('' when it can):
        it must be finite, above the table by more than the sphere's radius, over the
        table and within the arm's reach of its shoulder."""
        position = np.asarray(position, dtype=np.float64).reshape(-1)
        if position.shape != (3,) or not np.isfinite(position).all():
            return f"target position must be 3 finite values, got {position.tolist()}"
        config = self.world.config
        radius = config.target.radius
        if position[2] <= radius:
            return (f"target z {position[2]:.3f} m is not above the table top (z = 0) by more "
                    f"than the sphere radius {radius} m")
        centre, half = np.asarray(config.table_centre_xy), np.asarray(config.table_half_extents)
        if np.any(np.abs(position[:2] - centre) > half[:2]):
            return f"target {[round(float(v), 3) for v in position]} m is not over the table"
        robot = config.description
        reach = math.dist(position, robot.shoulder)  # no overflow for huge coordinates
        if reach > robot.reach:
            return (f"target is {reach:.3f} m from the shoulder, beyond the arm's reach "
                    f"({robot.reach} m)")
        return ""

    def set_target(self, position: np.ndarray) -> None:
        """Place the target (3,), m, base frame, and restart the task toward it.

        Raises:
            ValueError: a position :meth:`check_target` refuses.
        """
        reason = self.check_target(position)
        if reason:
            raise ValueError(reason)
        position = np.asarray(position, float).reshape(3)
        with self._lock:
            self.world.set_target(position)
            self.task.reset(position, now=self._time)
            if self._episode is not None:
                self._episode = Episode(self._episode.number, self._episode.seed,
                                        self._episode.profile, position.copy())
            if self.renderer is not None:
                self.renderer.set_target(position)

    # ------------------------------------------------------------------ node outputs
    def observed_state(self, sample: JointSample) -> None:
        """The latest observer joint state (the one announced as ``joint_state``)."""
        with self._out_lock:
            sample.copy_from(self._observed)

    def status(self) -> StatusSnapshot | None:
        """The latest task status (None before the first episode)."""
        with self._out_lock:
            return self._status

    def frame_answered(self, stamp: float) -> None:
        """The policy acted on the frame stamped ``stamp`` (s): lockstep may go on."""
        with self._answered:
            if stamp > self._answered_stamp:
                self._answered_stamp = stamp
            self._unanswered = 0
            self._answered.notify_all()

    def set_answer_source(self, source: Callable[[float], float] | None) -> None:
        """Let the loop's thread wait for the policy's answers itself (None: through
        :meth:`frame_answered` only).

        ``source(timeout)`` is called in the loop's thread, inside :meth:`cycle`, while
        lockstep waits: it hands the policy's joint targets waiting, if any, to their
        consumer (the controller stepping this world); when none are waiting it first
        blocks for them at most ``timeout`` s of wall time. It returns the stamp (s, the
        frame answered) of the newest targets the consumer has received so far, at a
        tick or here (``-inf`` before any).
        """
        self._answer_source = source

    def answer_held(self) -> bool:
        """True while lockstep holds the policy's answer to the pending frame back, until
        ``lockstep_latency`` of sim time after the frame: its consumer then takes the
        answer through the answer source at that tick, not at an earlier one, so the
        targets take effect at the same sim time however fast the policy answered."""
        frame = self._pending_frame
        return self.lockstep and not math.isnan(frame) \
            and self._time < frame + self.config.lockstep_latency - TIME_EPS

    def receive_frame(self, timeout: float) -> Frame | None:
        """The next rendered camera frame (blocking up to ``timeout`` s); None without one."""
        if self.renderer is None:
            return None
        return self.renderer.receive(timeout)

    def close(self) -> None:
        """Stop the render worker and disconnect PyBullet (idempotent)."""
        self._closed = True
        self._started.set()
        with self._answered:
            self._answered.notify_all()
        if self.renderer is not None:
            self.renderer.close()
            self.renderer = None
        with self._lock:
            self.world.close()

    # ------------------------------------------------------------------ internals
    def _apply_command(self) -> None:
        if self._time - self._last_command_time <= self.config.command_timeout:
            self._hold_q = None
            self.world.apply_command(self._command, self._command_interface)
            return
        if self._hold_q is None:
            self._hold_q = self.world.true_joint_positions()
            self.counters.holds += 1
        self.world.apply_command(self._hold_q, "position")

    def _due(self, kind: str, now_ns: int) -> bool:
        """True when ``kind`` is due at ``now_ns``; its next time stays on its grid."""
        late = now_ns - self._next[kind]
        if late < 0:
            return False
        period = self._periods[kind]
        self._next[kind] += (late // period + 1) * period
        return True

    def _outputs_due(self, now_ns: int) -> None:
        if self._episode is None:
            return
        now = self._time
        if self._due("frame", now_ns) and self.renderer is not None:
            wait = self.config.lockstep_timeout if self.lockstep else 0.0
            if self.renderer.request(now, self.world.true_joint_positions(), wait):
                self.counters.frames_requested += 1
                with self._answered:
                    self._pending_frame = now
        if self._due("joint_state", now_ns):
            q, qd, tau = self.world.joint_state()
            with self._out_lock:
                observed = self._observed
                observed.position[:] = q
                observed.velocity[:] = qd
                observed.effort[:] = tau
                observed.stamp = now
                observed.sequence += 1
            self.on_output("joint_state")
        if self._due("status", now_ns):
            snapshot = StatusSnapshot(self._episode.number, self.task.update(now), now,
                                      self.task.target, self.world.grasp_point())
            with self._out_lock:
                self._status = snapshot
            self.on_output("status")
        if self._due("clock", now_ns):
            self.on_output("clock")

    def _wait_for_answer(self) -> None:
        config = self.config
        with self._answered:
            frame = self._pending_frame
            if math.isnan(frame) or self._time < frame + config.lockstep_latency - TIME_EPS:
                return
            self._pending_frame = math.nan
            if self._answered_stamp >= frame - TIME_EPS:
                return
            if self._unanswered >= MAX_UNANSWERED:
                # No policy answering: go on without waiting, but wait again on every
                # PROBE_EVERY-th frame, so that a policy that comes back (or one that only
                # refused frames made stale by the sim running ahead) gets a fresh frame
                # and lockstep resumes with its first answer.
                self._skipped_waits += 1
                if self._skipped_waits % PROBE_EVERY:
                    return
            self.counters.lockstep_waits += 1
            source = self._answer_source
            if source is None:
                with waiting_in_loop():
                    answered = self._answered.wait_for(
                        lambda: self._answered_stamp >= frame - TIME_EPS or self._closed,
                        timeout=config.lockstep_timeout,
                    )
        if source is not None:
            answered = self._wait_on_source(source, frame)
        if not answered:
            with self._answered:
                self.counters.lockstep_timeouts += 1
                self._unanswered += 1

    def _wait_on_source(self, source: Callable[[float], float], frame: float) -> bool:
        """Wait (outside the lock) until ``source`` has handed over the answer to
        ``frame``, the hardware closes (True) or ``lockstep_timeout`` passes (False)."""
        deadline = time.monotonic() + self.config.lockstep_timeout
        wait = 0.0  # first what came already (a tick may have handed the answer over)
        while True:
            with waiting_in_loop():
                stamp = source(wait)
            if stamp >= frame - TIME_EPS:
                self.frame_answered(stamp)
                return True
            remaining = deadline - time.monotonic()
            if self._closed or remaining <= 0.0:
                return self._closed
            wait = min(remaining, ANSWER_POLL_S)


def load_profiles_default() -> dict[str, RandomizationProfile]:
    """The randomization profiles of the sim's YAML file (read once)."""
    from visuomotor_sim.randomization import default_config_path

    return load_profiles(default_config_path())
