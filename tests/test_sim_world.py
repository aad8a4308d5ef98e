"""PyBullet world: determinism, command modes and limits, each randomization term's effect."""

from __future__ import annotations

import numpy as np
import pytest

from visuomotor_sim.randomization import DynamicsParams, VisualParams
from visuomotor_sim.world import ArmWorld, WorldConfig

STEPS = 200


@pytest.fixture(scope="module")
def world():
    w = ArmWorld()
    yield w
    w.close()


def hold_torques(world: ArmWorld) -> np.ndarray:
    """Torques that hold the arm still now (PyBullet inverse dynamics, zero velocity)."""
    q = world.true_joint_positions().tolist() + [world.config.finger_opening] * 2
    zeros = [0.0] * len(q)
    return np.array(world.client.calculateInverseDynamics(world.robot, q, zeros, zeros))[:7]


def run_torques(world: ArmWorld, torques: np.ndarray, steps: int = STEPS) -> np.ndarray:
    for _ in range(steps):
        world.apply_command(torques, "effort")
        world.step()
    return world.true_joint_positions()


def rollout(world: ArmWorld, seed: int, dynamics=None) -> tuple[np.ndarray, np.ndarray]:
    world.reset(seed, dynamics=dynamics)
    rng = np.random.default_rng(seed)
    trace = []
    for _ in range(100):
        q, qd, _ = world.joint_state()
        world.apply_command(rng.normal(0.0, 5.0, 7), "effort")
        world.step()
        trace.append(np.concatenate([q, qd]))
    return np.array(trace), world.render()


def test_same_seed_and_commands_give_identical_trajectories_and_images(world):
    dyn = DynamicsParams(joint_state_noise=0.001, actuation_delay=0.003, payload_mass=0.5)
    a_trace, a_img = rollout(world, 11, dyn)
    with ArmWorld() as other:
        b_trace, b_img = rollout(other, 11, dyn)
    c_trace, _ = rollout(world, 11, dyn)
    np.testing.assert_array_equal(a_trace, b_trace)
    np.testing.assert_array_equal(a_trace, c_trace)
    np.testing.assert_array_equal(a_img, b_img)
    d_trace, _ = rollout(world, 12, dyn)
    assert not np.array_equal(a_trace, d_trace)


def test_reset_places_arm_near_home_and_target_in_range(world):
    target = world.reset(seed=5)
    q, qd, tau = world.joint_state()
    assert np.max(np.abs(q - np.array(world.config.home_q))) < 0.1
    assert np.all(qd == 0.0) and q.shape == qd.shape == tau.shape == (7,)
    tcfg = world.config.target
    assert np.all(target >= tcfg.low) and np.all(target <= tcfg.high)
    np.testing.assert_array_equal(world.target_position, target)


def test_grasp_point_is_forward_of_base_above_table_at_home(world):
    world.reset(seed=0)
    p = world.grasp_point()
    assert p.shape == (3,) and 0.2 < p[0] < 0.7 and abs(p[1]) < 0.1 and p[2] > 0.1


def test_hold_torques_keep_arm_still_and_zero_torque_lets_it_fall(world):
    world.reset(seed=0)
    q0 = world.true_joint_positions()
    assert np.max(np.abs(run_torques(world, hold_torques(world)) - q0)) < 2e-3
    world.reset(seed=0)
    assert np.max(np.abs(run_torques(world, np.zeros(7)) - q0)) > 0.05


def test_effort_is_clamped_to_urdf_limit(world):
    world.reset(seed=0)
    world.apply_command(np.full(7, 1e4), "effort")
    world.step()
    _, _, tau = world.joint_state()
    np.testing.assert_allclose(tau, world.limits.effort)


def test_position_and_velocity_modes_track_their_setpoints(world):
    world.reset(seed=0)
    goal = world.true_joint_positions() + 0.1
    for _ in range(1500):
        world.apply_command(goal, "position")
        world.step()
    assert np.max(np.abs(world.true_joint_positions() - goal)) < 0.02
    world.reset(seed=0)
    for _ in range(300):
        world.apply_command(np.full(7, 0.2), "velocity")
        world.step()
    _, qd, _ = world.joint_state()
    np.testing.assert_allclose(qd, 0.2, atol=0.05)
    with pytest.raises(ValueError, match="unknown command mode"):
        world.apply_command(np.zeros(7), "current")


@pytest.mark.parametrize("bad", [np.full(7, np.nan), np.zeros(6)], ids=["nan", "short"])
def test_malformed_commands_are_refused_and_not_queued(world, bad):
    world.reset(seed=0)
    world.apply_command(np.ones(7), "effort")
    with pytest.raises(ValueError, match="7 finite values"):
        world.apply_command(bad, "effort")
    world.step()
    np.testing.assert_array_equal(world.joint_state()[2], np.ones(7))


def test_payload_mass_adds_to_hand_and_loads_the_joints(world):
    world.reset(seed=0)
    hand, hold = world.link_mass("panda_hand"), hold_torques(world)  # nominal model
    q0 = world.true_joint_positions()
    world.reset(seed=0, dynamics=DynamicsParams(payload_mass=1.5))
    assert world.link_mass("panda_hand") == pytest.approx(hand + 1.5)
    sag = run_torques(world, hold) - q0
    assert np.max(np.abs(sag)) > 0.05  # the arm gives way under the unmodelled payload
    world.reset(seed=0)
    assert world.link_mass("panda_hand") == pytest.approx(hand)  # reset restores nominal


def test_external_force_loads_the_hand_like_the_equivalent_payload(world):
    world.reset(seed=0)
    hold, q0 = hold_torques(world), world.true_joint_positions()
    world.reset(seed=0, dynamics=DynamicsParams(payload_mass=1.0))
    by_payload = run_torques(world, hold) - q0
    world.reset(seed=0, dynamics=DynamicsParams(external_force=(0.0, 0.0, -9.81)))
    by_force = run_torques(world, hold) - q0
    assert np.max(np.abs(by_force)) > 0.02
    # Same load at the same point; the payload's extra inertia only slows the fall.
    cosine = by_force @ by_payload / (np.linalg.norm(by_force) * np.linalg.norm(by_payload))
    assert cosine > 0.95
    world.reset(seed=0, dynamics=DynamicsParams(external_force=(0.0, 0.0, 9.81)))
    lifted = run_torques(world, hold) - q0
    assert lifted @ by_force < 0.0  # an upward push moves the arm the other way
    world.reset(seed=0)
    np.testing.assert_allclose(run_torques(world, hold) - q0, 0.0, atol=0.01)  # cleared


def test_link_mass_scale_scales_link_masses(world):
    world.reset(seed=0)
    nominal = world.link_mass("panda_link3")
    world.reset(seed=0, dynamics=DynamicsParams(link_mass_scale=1.2))
    assert world.link_mass("panda_link3") == pytest.approx(1.2 * nominal)


def test_actuator_strength_scales_applied_torque(world):
    world.reset(seed=0, dynamics=DynamicsParams(actuator_strength_scale=0.7))
    command = np.array([5.0, -3.0, 2.0, 1.0, 0.5, -0.5, 0.2])
    world.apply_command(command, "effort")
    world.step()
    np.testing.assert_allclose(world.joint_state()[2], 0.7 * command)


def joint1_motion(world: ArmWorld, dynamics: DynamicsParams, torque: float) -> float:
    """Displacement of joint 1 (vertical axis: no gravity load) under ``torque`` N·m while
    the other joints get the torques that hold them."""
    world.reset(seed=0, dynamics=dynamics)
    q0 = world.true_joint_positions()
    command = hold_torques(world)
    command[0] = torque
    return float(run_torques(world, command)[0] - q0[0])


def test_joint_friction_resists_torques_below_it(world):
    assert joint1_motion(world, DynamicsParams(), 0.5) > 0.01
    assert abs(joint1_motion(world, DynamicsParams(joint_friction=1.0), 0.5)) < 1e-3


def test_joint_damping_slows_a_driven_joint(world):
    free = joint1_motion(world, DynamicsParams(), 5.0)
    assert joint1_motion(world, DynamicsParams(joint_damping=2.0), 5.0) < 0.8 * free


def test_actuation_delay_shifts_the_response_by_whole_steps(world):
    delay = 0.005
    world.reset(seed=0, dynamics=DynamicsParams(actuation_delay=delay))
    assert world.delay_steps == round(delay / world.dt)
    hold = hold_torques(world)
    world.apply_command(hold, "effort")
    kick = hold + np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 5.0])
    applied = []
    for _ in range(world.delay_steps + 2):
        world.apply_command(kick, "effort")
        world.step()
        applied.append(world.joint_state()[2][6])
    first_kick = int(np.argmax(np.isclose(applied, kick[6])))
    assert first_kick == world.delay_steps


def test_joint_state_noise_perturbs_measured_positions_only(world):
    world.reset(seed=0, dynamics=DynamicsParams(joint_state_noise=0.002))
    errors = np.array([world.joint_state()[0] - world.true_joint_positions()
                       for _ in range(200)])
    assert 0.0015 < errors.std() < 0.0025


def test_effort_integral_accumulates_squared_torque(world):
    world.reset(seed=0)
    torque = np.array([1.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    run_torques(world, torque, steps=100)
    assert world.effort_integral == pytest.approx(5.0 * 100 * world.dt)


def test_render_is_rgb8_c_contiguous_with_configured_size():
    with ArmWorld(WorldConfig()) as w:
        w.reset(seed=0)
        img = w.render()
    assert img.shape == (128, 128, 3) and img.dtype == np.uint8 and img.flags.c_contiguous


@pytest.mark.parametrize("visual", [
    VisualParams(image_noise=5.0),
    VisualParams(light_direction=(-1.0, -1.0, 0.3)),
    VisualParams(light_colour=(0.6, 0.6, 1.0)),
    VisualParams(table_colour=(0.3, 0.3, 0.4)),
    VisualParams(object_colour=(0.2, 0.9, 0.2)),
    VisualParams(camera_pose_jitter=(0.02, 0.0, 0.0, 0.0, 0.02, 0.0)),
], ids=["image_noise", "light_direction", "light_colour", "table_colour", "object_colour",
        "camera_pose_jitter"])
def test_each_visual_term_changes_the_image(world, visual):
    world.reset(seed=0, target_position=np.array([0.5, 0.0, 0.2]))
    base = world.render().astype(int)
    world.reset(seed=0, visual=visual, target_position=np.array([0.5, 0.0, 0.2]))
    changed = world.render().astype(int)
    changed_pixels = np.count_nonzero(np.abs(changed - base).max(axis=2) > 10)
    assert changed_pixels >= 10


def test_camera_jitter_moves_render_pose_but_not_published_pose(world):
    world.reset(seed=0, visual=VisualParams(camera_pose_jitter=(0.02, 0, 0, 0, 0, 0)))
    np.testing.assert_allclose(world.render_camera_pose().position - world.camera_pose().position,
                               [0.02, 0.0, 0.0])


def test_wrist_camera_renders_only_when_enabled(world):
    with pytest.raises(RuntimeError, match="wrist camera disabled"):
        world.render_wrist()
    with ArmWorld(WorldConfig(wrist_camera=True)) as w:
        w.reset(seed=0)
        assert w.render_wrist().shape == (128, 128, 3)


def test_world_config_rejects_bad_values():
    with pytest.raises(ValueError, match="physics_hz"):
        WorldConfig(physics_hz=10.0)
    with pytest.raises(ValueError, match="home_q"):
        WorldConfig(home_q=(0.0,) * 6)
    with pytest.raises(ValueError, match="robot_visual"):
        WorldConfig(robot_visual="meshy")
