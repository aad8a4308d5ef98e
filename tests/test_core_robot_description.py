"""The robot description file: loaded once, validated, and the source of the robot's facts."""

from pathlib import Path

import pytest
import yaml

from visuomotor_core.controller_config import ControllerConfig
from visuomotor_core.robot_description import (
    DEFAULT_ROBOT,
    RobotDescription,
    description_path,
    load_robot,
)
from visuomotor_core.robot_model import RobotModel


def _write(tmp_path: Path, **changes) -> Path:
    data = yaml.safe_load(description_path(DEFAULT_ROBOT).read_text())
    data["urdf"] = str(load_robot().urdf)
    data.update(changes)
    path = tmp_path / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_default_robot_names_links_and_joints_its_urdf_has():
    robot = load_robot()
    model = RobotModel.from_description(robot)
    assert model.joint_names == robot.arm_joints
    assert model.base_link == robot.base_frame
    for link in (robot.tool_frame, robot.grasp_link):
        assert link in model.link_names
    assert len(robot.home) == robot.n == len(robot.kp) == len(robot.kd)
    lower, upper = model.limits.lower, model.limits.upper
    assert all(lo < q < hi for lo, q, hi in zip(lower, robot.home, upper, strict=True))


def test_controller_defaults_come_from_the_description():
    robot = load_robot()
    config = ControllerConfig()
    assert config.num_joints == robot.n
    assert config.kp == robot.kp and config.kd == robot.kd
    assert config.position_margin == robot.position_margin
    assert ControllerConfig.for_robot(robot, kp=tuple(2 * k for k in robot.kp)).kp == tuple(
        2 * k for k in robot.kp)


def test_description_with_home_of_wrong_length_is_refused(tmp_path):
    with pytest.raises(ValueError, match="home needs 7"):
        RobotDescription.from_file(_write(tmp_path, home=[0.0] * 6))


def test_description_with_unknown_key_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown keys"):
        RobotDescription.from_file(_write(tmp_path, colour="red"))


def test_description_with_negative_gain_is_refused(tmp_path):
    gains = dict(yaml.safe_load(description_path().read_text())["gains"])
    gains["kd"] = [-1.0, *gains["kd"][1:]]
    with pytest.raises(ValueError, match=r"kd\[0\] must be >= 0"):
        RobotDescription.from_file(_write(tmp_path, gains=gains))


def test_description_whose_urdf_is_missing_is_refused(tmp_path):
    with pytest.raises(ValueError, match="URDF not found"):
        RobotDescription.from_file(_write(tmp_path, urdf="nowhere.urdf"))


def test_description_named_unlike_its_file_is_refused(tmp_path):
    path = _write(tmp_path)
    path.rename(tmp_path / "other.yaml")
    with pytest.raises(ValueError, match="differs from the file name"):
        RobotDescription.from_file(tmp_path / "other.yaml")


def test_unknown_robot_is_refused_with_where_it_looked():
    with pytest.raises(ValueError, match="no description for robot 'nosuchrobot'"):
        description_path("nosuchrobot")
