"""RobotModel: URDF parsing, forward kinematics and gravity torques against PyBullet."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from visuomotor_core.robot_description import load_robot
from visuomotor_core.robot_model import Payload, RobotModel

URDF = Path(__file__).resolve().parents[1] / "ros2_ws/src/visuomotor_description/urdf/panda.urdf"
GRAVITY = (0.0, 0.0, -9.81)
N_CONFIGS = 40


@pytest.fixture(scope="module")
def model() -> RobotModel:
    return RobotModel.from_urdf_file(URDF, load_robot().arm_joints)


@pytest.fixture(scope="module")
def bullet():
    """A DIRECT PyBullet client with pybullet_data's Panda on a fixed base."""
    import pybullet
    import pybullet_data

    client = pybullet.connect(pybullet.DIRECT)
    pybullet.setGravity(*GRAVITY, physicsClientId=client)
    robot = pybullet.loadURDF(
        str(Path(pybullet_data.getDataPath()) / "franka_panda/panda.urdf"),
        useFixedBase=True,
        physicsClientId=client,
    )
    links = {
        pybullet.getJointInfo(robot, j, physicsClientId=client)[12].decode(): j
        for j in range(pybullet.getNumJoints(robot, physicsClientId=client))
    }
    yield pybullet, client, robot, links
    pybullet.disconnect(client)


def _random_configurations(model: RobotModel, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(model.limits.lower, model.limits.upper, size=(N_CONFIGS, model.n))


def test_urdf_copy_is_identical_to_pybullet_data():
    import pybullet_data
    original = Path(pybullet_data.getDataPath()) / "franka_panda/panda.urdf"
    assert URDF.read_bytes() == original.read_bytes()


def test_gravity_torques_match_pybullet_inverse_dynamics(model, bullet):
    pybullet, client, robot, _ = bullet
    zeros = [0.0] * 9  # 7 arm joints + 2 finger joints
    worst, scale = 0.0, 0.0
    for q in _random_configurations(model):
        full = [*q.tolist(), 0.0, 0.0]
        expected = np.array(
            pybullet.calculateInverseDynamics(robot, full, zeros, zeros, physicsClientId=client)
        )[:7]
        worst = max(worst, float(np.max(np.abs(model.gravity_torques(q) - expected))))
        scale = max(scale, float(np.max(np.abs(expected))))
    assert scale > 10.0  # the check is not vacuous
    assert worst < 1e-6 * scale


def test_forward_kinematics_matches_pybullet_link_states(model, bullet):
    pybullet, client, robot, links = bullet
    names = ("panda_link4", "panda_hand", "panda_grasptarget", "panda_leftfinger")
    for q in _random_configurations(model, seed=1)[:10]:
        for j, value in enumerate(q):
            pybullet.resetJointState(robot, j, value, physicsClientId=client)
        for name in names:
            state = pybullet.getLinkState(
                robot, links[name], computeForwardKinematics=True, physicsClientId=client
            )
            pose = model.forward_kinematics(q, name)
            rotation = np.array(pybullet.getMatrixFromQuaternion(state[5])).reshape(3, 3)
            np.testing.assert_allclose(pose[:3, 3], state[4], atol=1e-6, err_msg=name)
            np.testing.assert_allclose(pose[:3, :3], rotation, atol=1e-6, err_msg=name)
            np.testing.assert_allclose(pose[3], [0, 0, 0, 1])


def test_grasp_point_is_link_index_11_in_pybullet(bullet):
    _, _, _, links = bullet
    assert links["panda_grasptarget"] == 11


def test_forward_kinematics_of_base_link_is_identity(model):
    np.testing.assert_allclose(model.forward_kinematics(np.zeros(7), "panda_link0"), np.eye(4))


def test_limits_are_parsed_from_the_urdf(model):
    limits = model.limits
    np.testing.assert_allclose(limits.lower[[0, 1, 3, 5]], [-2.9671, -1.8326, -3.1416, -0.0873])
    np.testing.assert_allclose(limits.upper[[0, 1, 3, 5]], [2.9671, 1.8326, 0.0, 3.8223])
    np.testing.assert_allclose(limits.velocity, [2.175] * 4 + [2.61] * 3)
    np.testing.assert_allclose(limits.effort, [87.0] * 4 + [12.0] * 3)


def test_hand_and_fingers_are_folded_into_the_last_body(model):
    # link7 0.2 + link8 0 + hand 0.81 + two fingers 0.1 + grasp target 0
    assert model.body_masses[-1] == pytest.approx(1.21)
    assert model.body_masses[0] == pytest.approx(2.7)


def test_payload_adds_the_torque_of_a_point_mass(model):
    q = np.array([0.3, -0.4, 0.2, -2.0, 0.1, 1.6, 0.7])
    payload = Payload(mass=1.5, com=(0.0, 0.0, 0.05), link="panda_hand")
    added = model.gravity_torques(q, payload) - model.gravity_torques(q)
    # The same torque from the Jacobian transpose of the payload point.
    point = model.forward_kinematics(q, "panda_hand") @ np.array([0.0, 0.0, 0.05, 1.0])
    _, origins, axes = model.joint_frames(q)
    jacobian = np.cross(axes, point[:3] - origins)  # (n, 3): d point / d q_j
    expected = jacobian @ (-1.5 * np.array(GRAVITY))
    np.testing.assert_allclose(added, expected, atol=1e-9)
    assert np.abs(added).max() > 1.0


def test_gravity_torques_write_into_out_without_changing_results(model):
    q = np.array([0.1, 0.2, -0.3, -1.0, 0.5, 1.0, -0.5])
    out = np.empty(7)
    result = model.gravity_torques(q, out=out)
    assert result is out
    np.testing.assert_allclose(out, model.gravity_torques(q))


_GENERIC_URDF = """<robot name="test">
  <link name="base"/>
  <link name="a"><inertial><origin xyz="0.1 0.02 0.3" rpy="0.3 0.1 0"/><mass value="1.5"/>
    <inertia ixx="0.01" iyy="0.01" izz="0.01" ixy="0" ixz="0" iyz="0"/></inertial></link>
  <link name="b"><inertial><origin xyz="0.2 -0.1 0.05"/><mass value="0.7"/></inertial></link>
  <link name="c"><inertial><origin xyz="0.0 0.15 0.1"/><mass value="0.4"/></inertial></link>
  <link name="tool"><inertial><origin xyz="0.05 0 0"/><mass value="0.3"/></inertial></link>
  <joint name="j1" type="revolute"><parent link="base"/><child link="a"/>
    <origin xyz="0 0 0.2" rpy="0.2 -0.1 0.4"/><axis xyz="1 0 0"/>
    <limit lower="-2" upper="2" velocity="1" effort="50"/></joint>
  <joint name="j2" type="revolute"><parent link="a"/><child link="b"/>
    <origin xyz="0.1 0.3 0" rpy="0 0.5 0"/><axis xyz="0 -1 1"/>
    <limit lower="-2" upper="2" velocity="1" effort="50"/></joint>
  <joint name="j3" type="continuous"><parent link="b"/><child link="c"/>
    <origin xyz="0.3 0 0.1"/><axis xyz="0 0 -1"/>
    <limit lower="-3" upper="3" velocity="1" effort="50"/></joint>
  <joint name="fix" type="fixed"><parent link="c"/><child link="tool"/>
    <origin xyz="0 0.2 0" rpy="0 0 1"/></joint>
</robot>"""


def _potential_energy(model: RobotModel, q: np.ndarray) -> float:
    """-sum m g·c over the links, from forward kinematics only."""
    energy = 0.0
    link_mass = {"a": 1.5, "b": 0.7, "c": 0.4, "tool": 0.3}
    link_com = {
        "a": (0.1, 0.02, 0.3),
        "b": (0.2, -0.1, 0.05),
        "c": (0.0, 0.15, 0.1),
        "tool": (0.05, 0.0, 0.0),
    }
    for name, mass in link_mass.items():
        com = model.forward_kinematics(q, name) @ np.array([*link_com[name], 1.0])
        energy -= mass * float(np.dot(GRAVITY, com[:3]))
    return energy


def test_gravity_is_the_gradient_of_potential_energy_for_arbitrary_axes():
    model = RobotModel.from_urdf_string(_GENERIC_URDF, ["j1", "j2", "j3"])
    rng = np.random.default_rng(3)
    step = 1e-6
    for _ in range(5):
        q = rng.uniform(-1.5, 1.5, size=3)
        gradient = np.array(
            [
                (_potential_energy(model, q + step * e) - _potential_energy(model, q - step * e))
                / (2 * step)
                for e in np.eye(3)
            ]
        )
        np.testing.assert_allclose(model.gravity_torques(q), gradient, atol=1e-6)


def test_fixed_joint_offset_carries_into_forward_kinematics():
    model = RobotModel.from_urdf_string(_GENERIC_URDF, ["j1", "j2", "j3"])
    q = np.array([0.3, -0.2, 0.9])
    tool, parent = model.forward_kinematics(q, "tool"), model.forward_kinematics(q, "c")
    offset = np.linalg.inv(parent) @ tool
    np.testing.assert_allclose(offset[:3, 3], [0.0, 0.2, 0.0], atol=1e-12)
    np.testing.assert_allclose(offset[:2, :2], [[np.cos(1), -np.sin(1)], [np.sin(1), np.cos(1)]])


@pytest.mark.parametrize(
    ("text", "joints", "message"),
    [
        ("<robot><link name='a'/>", ["j"], "not well-formed"),
        ("<model/>", ["j"], "<robot>"),
        ("<robot><link name='a'/></robot>", ["j"], "no joint named \\['j'\\]"),
        (
            "<robot><link name='a'/><joint name='j' type='revolute'><parent link='a'/>"
            "<child link='b'/><limit lower='-1' upper='1' velocity='1' effort='1'/></joint>"
            "</robot>",
            ["j"],
            "missing link 'b'",
        ),
        (
            "<robot><link name='a'/><link name='b'/><joint name='j' type='revolute'>"
            "<parent link='a'/><child link='b'/></joint></robot>",
            ["j"],
            "'j' has no <limit>",
        ),
        (
            "<robot><link name='a'/><link name='b'/><joint name='j' type='revolute'>"
            "<child link='b'/></joint></robot>",
            ["j"],
            "missing <parent link",
        ),
        (
            "<robot><link name='a'/><link name='b'/><joint name='j' type='fixed'>"
            "<parent link='a'/><child link='b'/></joint></robot>",
            ["j"],
            "only revolute",
        ),
        (
            "<robot><link name='a'><inertial><mass value='x'/></inertial></link></robot>",
            ["j"],
            "mass",
        ),
    ],
)
def test_malformed_urdf_raises_value_error_naming_the_problem(text, joints, message):
    with pytest.raises(ValueError, match=message):
        RobotModel.from_urdf_string(text, joints)


def test_joints_out_of_chain_order_are_refused():
    with pytest.raises(ValueError, match="serial chain"):
        RobotModel.from_urdf_string(_GENERIC_URDF, ["j2", "j1", "j3"])


def test_missing_urdf_file_raises_value_error(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        RobotModel.from_urdf_file(tmp_path / "absent.urdf")


def test_wrong_q_length_raises(model):
    with pytest.raises(ValueError, match="shape"):
        model.gravity_torques(np.zeros(6))
