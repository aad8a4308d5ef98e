"""SimHardware (visuomotor_sim.hardware): the PyBullet world behind the controller's seam.

The test thread plays the control loop: it calls read/write/cycle itself, so every
figure is on sim time and deterministic. Camera frames come from the real render
worker process; lockstep is exercised with a thread standing in for the policy.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace

import numpy as np
import pytest

from visuomotor_core.hardware import JointSample
from visuomotor_core.timing import wait_until
from visuomotor_sim.hardware import (
    MAX_SEED,
    MAX_UNANSWERED,
    OUTPUTS,
    SimHardware,
    SimHardwareConfig,
    load_profiles_default,
)
from visuomotor_sim.randomization import RandomizationProfile
from visuomotor_sim.world import ArmWorld, WorldConfig

N = 7
WAIT = 30.0  # s, upper bound on any wait for a frame or a condition
PROFILES = load_profiles_default()
#: The training profile's visual terms without image noise: randomized colours, light
#: and camera pose, and images that are a pure function of the scene.
VISUAL = RandomizationProfile(
    "visual", tuple(t for t in PROFILES["training"].terms if t.name != "image_noise"))


def wait_for(condition, timeout: float = WAIT) -> bool:
    return wait_until(condition, timeout, 0.001)

@pytest.fixture
def make_hw() -> Iterator[Callable[..., SimHardware]]:
    made: list[SimHardware] = []

    def make(renderer: bool = False, physics_hz: float = 1000.0, on_output=None,
             **config) -> SimHardware:
        config = {"lockstep": False, "physics_hz": physics_hz, **config}
        hw = SimHardware(SimHardwareConfig(**config), WorldConfig(physics_hz=physics_hz),
                         profiles={**PROFILES, "visual": VISUAL}, on_output=on_output,
                         renderer=renderer)
        made.append(hw)
        return hw

    yield make
    for hw in made:
        hw.close()


def cycles(hw: SimHardware, n: int, command: np.ndarray | None = None,
           interface: str = "effort") -> None:
    for _ in range(n):
        if command is not None:
            hw.write(command, interface)
        hw.cycle()


def applied_effort(hw: SimHardware) -> np.ndarray:
    """Torques applied in the last physics step, N·m (7,)."""
    return hw.world.joint_state()[2]


# ------------------------------------------------------------------ stepping
def test_cycle_advances_sim_time_one_control_period_and_physics_steps_per_cycle(make_hw):
    hw = make_hw(physics_hz=2000.0, control_rate_hz=1000.0)
    hw.reset_episode(1, "nominal")
    assert hw.config.steps_per_cycle == 2
    sample = JointSample.zeros(N)
    hw.read(sample)
    assert sample.stamp == 0.0 and sample.sequence == 1
    hw.cycle()
    assert hw.now() == 0.001
    assert hw.counters.cycles == 1 and hw.counters.steps == 2
    assert hw.world.time == pytest.approx(0.001)
    cycles(hw, 999)
    assert hw.now() == 1.0, "sim time stays an exact multiple of the period"
    assert hw.counters.steps == 2000
    hw.read(sample)
    assert sample.stamp == 1.0 and sample.sequence == 2


def test_before_the_first_episode_nothing_steps_and_time_stands_still(make_hw):
    hw = make_hw()
    cycles(hw, 10)
    assert hw.now() == 0.0 and hw.counters.steps == 0
    lockstep = make_hw(lockstep=True, lockstep_timeout=0.01)
    cycles(lockstep, 2)  # waits (bounded) for an episode instead of spinning
    assert lockstep.now() == 0.0 and lockstep.counters.steps == 0
    hw.reset_episode(0, "nominal")
    cycles(hw, 10)
    assert hw.counters.steps == 10


def test_set_control_rate_needs_an_integer_number_of_physics_steps_per_cycle(make_hw):
    hw = make_hw()
    hw.reset_episode(0, "nominal")
    for rate in (300.0, 2000.0, 0.0, math.nan):
        with pytest.raises(ValueError):
            hw.set_control_rate(rate)
        assert hw.config.control_rate_hz == 1000.0
    hw.set_control_rate(500.0)
    hw.cycle()
    assert hw.now() == 0.002 and hw.counters.steps == 2


def test_outputs_are_announced_on_their_sim_time_grids(make_hw):
    announced: list[tuple[str, float]] = []
    hw = make_hw(on_output=lambda kind: announced.append((kind, hw.now())),
                 joint_state_rate_hz=100.0, clock_rate_hz=200.0, status_rate_hz=20.0)
    hw.reset_episode(0, "nominal")
    cycles(hw, 1000)
    by_kind = {kind: [t for k, t in announced if k == kind] for kind in OUTPUTS}
    assert len(by_kind["joint_state"]) == 100 and len(by_kind["clock"]) == 200
    # the status of a new episode at once, then on its grid
    assert by_kind["status"][:3] == [0.001, 0.05, 0.1] and len(by_kind["status"]) == 21
    assert all(round(t * 1e9) % 10_000_000 == 0 for t in by_kind["joint_state"][1:])
    sample = JointSample.zeros(N)
    hw.observed_state(sample)
    assert sample.stamp == by_kind["joint_state"][-1] and sample.sequence == 100
    status = hw.status()
    assert status.episode == 1 and status.time == by_kind["status"][-1]
    assert np.array_equal(status.target, hw.episode.target)


# ------------------------------------------------------------------ commands
def test_an_episode_reset_changes_the_epoch_and_drops_commands_read_before_it(make_hw):
    """A command computed from a sample read before an episode reset is not applied to
    the world the reset made: the arm holds where the reset put it until the controller
    reads the new state."""
    hw = make_hw()
    hw.reset_episode(0, "nominal")
    sample = JointSample.zeros(N)
    hw.read(sample)
    first = sample.epoch
    push = np.full(N, 5.0)
    hw.write(push, "effort")
    hw.cycle()
    assert hw.counters.rejected == 0 and np.any(applied_effort(hw) != 0.0)
    hw.read(sample)  # read in episode 1 ...
    hw.reset_episode(1, "nominal")  # ... the world is reset before the write
    home = hw.world.true_joint_positions().copy()
    hw.write(push, "effort")
    hw.cycle()
    assert hw.counters.rejected == 1, "the stale command is dropped"
    assert hw.counters.holds >= 1
    np.testing.assert_allclose(hw.world.true_joint_positions(), home, atol=2e-3)
    hw.read(sample)
    assert sample.epoch == first + 1
    hw.write(push, "effort")
    hw.cycle()
    assert hw.counters.rejected == 1, "a command from the new state is applied"
    np.testing.assert_allclose(applied_effort(hw)[:2], push[:2])


def test_a_reset_cannot_land_between_the_epoch_check_and_the_command(make_hw):
    """A reset requested from another thread (the sim node's service) while the loop is
    inside write(): it waits for the write, so the command read before it is dropped by
    the reset, never left live for the new world."""
    hw = make_hw()
    hw.reset_episode(0, "nominal")
    sample = JointSample.zeros(N)
    hw.read(sample)
    resets: list[threading.Thread] = []

    class ResetMidWrite(dict):
        def __getitem__(self, interface):  # write() looks the bounds up after its check
            thread = threading.Thread(target=hw.reset_episode, args=(1, "nominal"))
            thread.start()
            thread.join(0.3)  # a reset not held off by the write finishes meanwhile
            resets.append(thread)
            return super().__getitem__(interface)

    hw._bounds = ResetMidWrite(hw._bounds)
    hw.write(np.full(N, 5.0), "effort")
    resets[0].join(WAIT)
    assert hw.episode.number == 2
    holds = hw.counters.holds
    hw.cycle()
    assert hw.counters.holds == holds + 1, "the command from before the reset is not applied"
    assert not np.any(applied_effort(hw)[:2] == 5.0)


def test_effort_beyond_the_limits_is_clamped_before_it_is_applied(make_hw):
    hw = make_hw()
    hw.reset_episode(0, "nominal")
    limit = hw.world.limits.effort
    command = np.zeros(N)
    command[0], command[3] = 1000.0, -1000.0
    cycles(hw, 1, command)
    assert hw.counters.clamped == 1 and hw.counters.rejected == 0
    applied = applied_effort(hw)
    assert applied[0] == pytest.approx(limit[0]) and applied[3] == pytest.approx(-limit[3])
    assert np.all(np.abs(applied) <= limit + 1e-9)
    assert command[0] == 1000.0, "the caller's array is not modified"


@pytest.mark.parametrize(("bad", "interface"), [
    (np.full(N, math.nan), "effort"),
    (np.array([0.0] * (N - 1) + [math.inf]), "effort"),
    (np.array([-math.inf] + [0.0] * (N - 1)), "effort"),
    (np.ones(N - 1), "effort"),
    (np.ones(N + 1), "effort"),
    (np.ones(N), "torque"),
], ids=["nan", "inf", "minus-inf", "too-short", "too-long", "unknown-interface"])
def test_malformed_commands_are_refused_and_the_previous_one_stays(make_hw, bad, interface):
    hw = make_hw(command_timeout=10.0)
    hw.reset_episode(0, "nominal")
    good = np.linspace(-2.0, 2.0, N)
    cycles(hw, 1, good)
    hw.write(bad, interface)
    cycles(hw, 5)
    assert hw.counters.rejected == 1
    assert np.allclose(applied_effort(hw), good), "the previous command stays applied"
    cycles(hw, 1, -good)
    assert np.allclose(applied_effort(hw), -good)


@pytest.mark.parametrize("interface", ["position", "velocity"])
def test_position_and_velocity_commands_are_clamped_to_the_joint_limits(make_hw, interface):
    hw = make_hw()
    hw.reset_episode(0, "nominal")
    hw.write(np.full(N, 100.0), interface)
    assert hw.counters.clamped == 1 and hw.counters.rejected == 0
    limits = hw.world.limits
    upper = limits.upper if interface == "position" else limits.velocity
    assert np.array_equal(hw._command, upper)


def test_without_commands_for_command_timeout_the_joints_hold_their_position(make_hw):
    timeout = 0.05
    hw = make_hw(command_timeout=timeout)
    hw.reset_episode(0, "nominal")
    zero = np.zeros(N)  # no gravity compensation: the arm sags while these are applied
    cycles(hw, 20, zero)
    last_command = hw.now()
    cycles(hw, round(timeout * 1000) - 1)
    assert hw.counters.holds == 0, "commands still count until the timeout"
    q_sagging = hw.world.true_joint_positions()
    cycles(hw, 2)
    assert hw.counters.holds == 1 and hw.now() - last_command > timeout
    q_hold = hw.world.true_joint_positions()
    cycles(hw, 500)
    drift = np.abs(hw.world.true_joint_positions() - q_hold).max()
    assert drift < 0.02, f"held within {drift:.4f} rad over 0.5 s"
    assert np.abs(q_hold - q_sagging).max() < 0.02
    # A command ends the hold; zero torque lets the arm sag again.
    cycles(hw, 300, zero)
    assert np.abs(hw.world.true_joint_positions() - q_hold).max() > 5 * drift
    assert hw.counters.holds == 1


# ------------------------------------------------------------------ episodes and targets
@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_every_profile_resets_deterministically_by_seed(make_hw, profile):
    hw = make_hw()
    first = hw.reset_episode(11, profile)
    dynamics, visual = hw.world.dynamics, hw.world.visual
    cycles(hw, 5)
    again = hw.reset_episode(11, profile)
    assert np.array_equal(first.target, again.target) and again.number == first.number + 1
    assert (hw.world.dynamics, hw.world.visual) == (dynamics, visual)
    assert (again.seed, again.profile) == (11, profile)
    other = hw.reset_episode(12, profile)
    assert not np.array_equal(other.target, first.target)
    if profile == "training_with_force":
        assert any(hw.world.dynamics.external_force)


@pytest.mark.parametrize("seed", [-1, MAX_SEED + 1, 2**64, 1.5, True, "3"])
def test_reset_refuses_seeds_out_of_range_and_changes_nothing(make_hw, seed):
    hw = make_hw()
    episode = hw.reset_episode(MAX_SEED, "nominal")  # the largest seed is accepted
    with pytest.raises(ValueError, match="seed"):
        hw.reset_episode(seed, "nominal")
    assert hw.episode is episode


def test_reset_refuses_an_unknown_profile_and_names_the_known_ones(make_hw):
    hw = make_hw()
    episode = hw.reset_episode(0, "heldout")
    with pytest.raises(ValueError, match=r"unknown profile 'mars'.*nominal"):
        hw.reset_episode(0, "mars")
    assert hw.episode is episode and hw.world.dynamics.payload_mass >= 1.5


BAD_TARGETS = {
    "nan": ([math.nan, 0.0, 0.2], "finite"),
    "inf": ([0.4, math.inf, 0.2], "finite"),
    "1e20": ([1e20, 0.0, 0.2], "not over the table"),
    "+1e308": ([0.4, 0.0, 1e308], "beyond the arm's reach"),
    "-1e308": ([0.4, 0.0, -1e308], "not above the table"),
    "huge-xy": ([1e308, -1e308, 0.2], "not over the table"),
    "below-table": ([0.4, 0.0, 0.01], "not above the table"),
    "outside-table": ([0.4, 0.75, 0.2], "not over the table"),
    "beyond-reach": ([0.89, 0.0, 0.05], "beyond the arm's reach"),
    "two-values": ([0.4, 0.0], "3 finite values"),
}


@pytest.mark.parametrize("name", sorted(BAD_TARGETS))
def test_set_target_refuses_unreachable_positions_with_a_reason(make_hw, name):
    position, reason = BAD_TARGETS[name]
    hw = make_hw()
    hw.reset_episode(0, "nominal")
    before = hw.episode.target.copy()
    assert reason in hw.check_target(np.array(position))
    with pytest.raises(ValueError, match=reason):
        hw.set_target(np.array(position))
    assert np.array_equal(hw.world.target_position, before)
    assert np.array_equal(hw.task.target, before)
    assert np.array_equal(hw.episode.target, before)


def test_set_target_moves_the_target_and_restarts_the_task(make_hw):
    hw = make_hw(status_rate_hz=100.0)
    hw.reset_episode(0, "nominal")
    cycles(hw, 50)
    goal = np.array([0.45, -0.12, 0.22])
    assert hw.check_target(goal) == ""
    hw.set_target(goal)
    assert np.array_equal(hw.world.target_position, goal)
    assert np.array_equal(hw.episode.target, goal) and hw.episode.number == 1
    cycles(hw, 20)
    status = hw.status()
    assert np.array_equal(status.target, goal)
    assert status.status.time < 0.05, "the task restarted at the new target"


# ------------------------------------------------------------------ camera
def _next_frame(hw: SimHardware, command: np.ndarray | None = None):
    """Cycle until a frame is requested; the state then and the frame it renders."""
    requested = hw.counters.frames_requested
    for _ in range(10_000):
        cycles(hw, 1, command)
        if hw.counters.frames_requested > requested:
            break
    else:
        raise AssertionError("no frame requested")
    state = (hw.now(), hw.world.true_joint_positions(), hw.world.render())
    frame = hw.receive_frame(WAIT)
    assert frame is not None, "the render worker sent no frame"
    return state, frame


def test_the_worker_renders_the_frame_the_world_shows_at_its_stamp(make_hw):
    hw = make_hw(renderer=True, camera_rate_hz=20.0)
    episode = hw.reset_episode(5, "visual")
    push = np.array([20.0, 30.0, -20.0, 10.0, 3.0, -3.0, 2.0])  # the arm moves
    _next_frame(hw, push)
    (stamp, q, world_image), frame = _next_frame(hw, push)
    assert frame.stamp == stamp
    assert frame.image.shape == world_image.shape and frame.image.dtype == np.uint8
    # A world in the same state (same episode draw, same joint positions) renders the
    # very same image.
    with ArmWorld(hw.world.config) as copy:
        copy.reset(episode.seed, dynamics=hw.world.dynamics, visual=hw.world.visual,
                   target_position=episode.target)
        copy.pose_arm(q)
        assert np.array_equal(frame.image, copy.render())
    # The robot's own world differs at most where the physics moved the fingers.
    differing = np.any(frame.image != world_image, axis=2).mean()
    assert differing < 0.01, f"{differing:.2%} of pixels differ from the world's render"


def test_frames_are_stamped_on_the_camera_period_grid_also_after_a_reset(make_hw):
    hw = make_hw(renderer=True, camera_rate_hz=20.0)
    hw.reset_episode(0, "nominal")
    stamps = [_next_frame(hw)[1].stamp for _ in range(2)]
    cycles(hw, 17)  # a reset off the grid
    hw.reset_episode(1, "nominal")
    reset_at = hw.now()
    stamps += [_next_frame(hw)[1].stamp for _ in range(2)]
    assert all(round(s * 1e9) % 50_000_000 == 0 for s in stamps), stamps
    assert reset_at < stamps[2] <= reset_at + 0.05, "the first frame after the reset"


def test_lockstep_holds_an_answer_back_until_the_latency_after_its_frame(make_hw):
    """answer_held: from a frame's request until lockstep_latency of sim time after it
    (where the physics waits for the answer), and never in wall-paced runs."""
    hw = make_hw(renderer=True, lockstep=True, lockstep_latency=0.005)
    hw.reset_episode(0, "nominal")
    assert not hw.answer_held()
    frame = _next_frame(hw)[0][0]
    held = []
    for _ in range(4):  # up to frame + 4 ms
        held.append(hw.answer_held())
        cycles(hw, 1)
    held.append(hw.answer_held())  # at frame + 4 ms: the next cycle reaches the wait point
    hw.frame_answered(frame)
    cycles(hw, 1)
    assert held == [True] * 5 and hw.now() == pytest.approx(frame + 0.005)
    assert not hw.answer_held(), "the wait point passed"

    paced = make_hw(renderer=True, lockstep=False)
    paced.reset_episode(0, "nominal")
    _next_frame(paced)
    assert not paced.answer_held()


# ------------------------------------------------------------------ lockstep
class Policy:
    """Stands in for the policy: receives every frame and answers it when told to."""

    def __init__(self, hw: SimHardware, answer: bool,
                 deliver: Callable[[float], None] | None = None) -> None:
        self.hw = hw
        self.answer = answer
        #: How an answer reaches the hardware (default: SimHardware.frame_answered).
        self.deliver = deliver or hw.frame_answered
        self.frames: list[float] = []
        self.physics_at_answer: list[tuple[float, float]] = []
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        hw = self.hw
        latency = hw.config.lockstep_latency
        while not self._stop:
            frame = hw.receive_frame(0.05)
            if frame is None:
                continue
            self.frames.append(frame.stamp)
            if not self.answer:
                continue
            waits = hw.counters.lockstep_waits
            # Answer once the physics has stopped for this frame, or gone past it (it
            # does not wait after MAX_UNANSWERED frames without an answer).
            wait_for(lambda s=frame.stamp, w=waits: hw.counters.lockstep_waits > w
                     or hw.now() > s + latency + 1e-9 or self._stop, WAIT)
            self.physics_at_answer.append((frame.stamp, hw.now()))
            self.deliver(frame.stamp)

    def stop(self) -> None:
        self._stop = True
        self._thread.join(timeout=5.0)


def run_frames(hw: SimHardware, policy: Policy, frames: int) -> None:
    """Cycle until ``frames`` more frames were received by the policy."""
    target = len(policy.frames) + frames
    deadline = time.monotonic() + 4 * WAIT
    while len(policy.frames) < target:
        assert time.monotonic() < deadline, "frames stopped coming"
        requested = hw.counters.frames_requested
        hw.cycle()
        if hw.counters.frames_requested > requested:
            # one frame in flight at a time: the next request finds the worker idle
            assert wait_for(lambda n=hw.counters.frames_requested: len(policy.frames) >= n)


def check_answered_frames(hw: SimHardware, policy: Policy) -> None:
    """Four frames, answered by ``policy``: the physics waited for each answer at
    frame + lockstep_latency (5 ms), and no wait timed out."""
    try:
        run_frames(hw, policy, 4)
        assert wait_for(lambda: len(policy.physics_at_answer) >= 3)
    finally:
        policy.stop()
    for stamp, physics in policy.physics_at_answer[:3]:
        assert physics == pytest.approx(stamp + 0.005, abs=1e-9), \
            "the physics waited at frame + lockstep_latency"
    assert hw.counters.lockstep_waits >= 3 and hw.counters.lockstep_timeouts == 0


def test_lockstep_stops_the_physics_until_the_policy_answers_each_frame(make_hw):
    hw = make_hw(renderer=True, lockstep=True, lockstep_latency=0.005, lockstep_timeout=WAIT)
    hw.reset_episode(0, "nominal")
    check_answered_frames(hw, Policy(hw, answer=True))


def test_lockstep_stops_waiting_after_max_unanswered_frames_and_resumes_on_an_answer(make_hw):
    hw = make_hw(renderer=True, lockstep=True, lockstep_timeout=0.05)
    hw.reset_episode(0, "nominal")
    policy = Policy(hw, answer=False)
    try:
        run_frames(hw, policy, MAX_UNANSWERED + 3)
        counters = hw.counters
        assert counters.lockstep_waits == counters.lockstep_timeouts == MAX_UNANSWERED
        # Answers come again: the physics waits for them again (and gets them in time).
        hw.config = replace(hw.config, lockstep_timeout=WAIT)
        policy.answer = True
        run_frames(hw, policy, 4)
    finally:
        policy.stop()
    assert counters.lockstep_timeouts == MAX_UNANSWERED
    assert counters.lockstep_waits >= MAX_UNANSWERED + 2


class AnswerSource:
    """Stands in for the controller's answer source (SimHardware.set_answer_source): the
    answers of the stand-in policy wait in a queue, as targets in a subscription's."""

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[float] = queue.SimpleQueue()
        self.newest = -math.inf
        self.calls: list[tuple[float, float]] = []  # (timeout, sim time) per call
        self.hw: SimHardware | None = None

    def __call__(self, timeout: float) -> float:
        self.calls.append((timeout, self.hw.now() if self.hw is not None else math.nan))
        try:
            self.newest = max(self.newest, self.queue.get(timeout=timeout) if timeout > 0
                              else self.queue.get_nowait())
            while True:
                self.newest = max(self.newest, self.queue.get_nowait())
        except queue.Empty:
            pass
        return self.newest


def test_lockstep_waits_on_the_answer_source_in_the_loop_s_thread(make_hw):
    """With an answer source the loop's own thread waits for the answers, through it:
    the physics stops at frame + lockstep_latency until the source has handed over the
    answer (frame_answered is never called from outside), and an answer the source
    handed over before the wait point (at a tick) lets the physics go on at once."""
    hw = make_hw(renderer=True, lockstep=True, lockstep_latency=0.005, lockstep_timeout=WAIT)
    source = AnswerSource()
    source.hw = hw
    hw.set_answer_source(source)
    hw.reset_episode(0, "nominal")
    policy = Policy(hw, answer=True, deliver=source.queue.put)
    check_answered_frames(hw, policy)
    wait_points = {round(stamp + 0.005, 6) for stamp in policy.frames}
    assert {round(t, 6) for _, t in source.calls} <= wait_points, \
        "the source is consulted only at the wait points"
    assert any(timeout > 0 for timeout, _ in source.calls), "the loop blocked in the source"

    # The answer to the next frame comes before its wait point: taken at a tick (the
    # consumer's newest stamp), the physics passes the wait point without blocking.
    source.newest = hw.now()  # every frame so far answered
    frame = hw.counters.frames_requested
    while hw.counters.frames_requested == frame:
        hw.cycle()
    stamp = hw.now()
    waits, calls = hw.counters.lockstep_waits, len(source.calls)
    source.newest = stamp  # handed over at a tick, before the wait point
    cycles(hw, 10)
    assert hw.now() == pytest.approx(stamp + 0.010, abs=1e-9)
    assert hw.counters.lockstep_waits == waits + 1 and hw.counters.lockstep_timeouts == 0
    assert [timeout for timeout, _ in source.calls[calls:]] == [0.0], \
        "one look at what came, no blocking wait"


def test_lockstep_with_a_silent_answer_source_times_out_and_goes_on(make_hw):
    hw = make_hw(renderer=True, lockstep=True, lockstep_timeout=0.05)
    source = AnswerSource()
    hw.set_answer_source(source)
    hw.reset_episode(0, "nominal")
    policy = Policy(hw, answer=False)
    try:
        run_frames(hw, policy, MAX_UNANSWERED + 2)
    finally:
        policy.stop()
    assert hw.counters.lockstep_waits == hw.counters.lockstep_timeouts == MAX_UNANSWERED
    assert sum(timeout for timeout, _ in source.calls) == pytest.approx(
        MAX_UNANSWERED * 0.05, abs=0.02), "each wait blocks in the source until its timeout"


def test_the_worker_s_messages_reach_it_in_the_order_made(make_hw):
    # A frame request is sent by the thread making it (the control loop's tick) when
    # nothing is queued; the services' messages go through the sender thread, and a
    # request never overtakes one made before it.
    hw = make_hw(renderer=True)
    worker = hw.renderer
    sent: list[tuple[str, str]] = []
    send = worker._conn.send

    def recording(message) -> None:
        sent.append((threading.current_thread().name, message[0]))
        send(message)

    worker._conn.send = recording
    hw.reset_episode(3, "nominal")
    assert worker.request(0.5, hw.world.true_joint_positions(), wait=WAIT)
    hw.set_target(np.array([0.5, 0.1, 0.25]))
    assert worker.receive(WAIT) is not None
    assert wait_for(lambda: len(sent) >= 3)
    assert [kind for _, kind in sent] == ["episode", "render", "target"]
    assert sent[0][0] == sent[2][0] == "render-requests"
    # Nothing queued now: the next request goes out from this thread, at once.
    assert wait_for(lambda: worker._queued == 0)
    assert worker.request(0.55, hw.world.true_joint_positions(), wait=WAIT)
    assert sent[-1] == (threading.current_thread().name, "render")
    assert worker.receive(WAIT) is not None


# ------------------------------------------------------------------ lifetime
def test_close_stops_the_render_worker_and_is_idempotent(make_hw):
    hw = make_hw(renderer=True)
    worker = hw.renderer
    assert worker.alive
    hw.close()
    assert not worker.alive and hw.renderer is None
    hw.close()
    assert hw.receive_frame(0.01) is None
