"""Camera model: intrinsics agree with PyBullet's matrices and with the rendered image."""

from __future__ import annotations

import numpy as np
import pybullet
import pytest

from visuomotor_sim.camera import CameraConfig, CameraPose, PinholeCamera, rotation_from_rotvec
from visuomotor_sim.world import ArmWorld, WorldConfig


@pytest.fixture(scope="module")
def world():
    w = ArmWorld()
    yield w
    w.close()


def red_blob_centroid(image: np.ndarray) -> tuple[np.ndarray, int]:
    img = image.astype(int)
    mask = (img[..., 0] > 120) & (img[..., 1] < 70) & (img[..., 2] < 70)
    vs, us = np.nonzero(mask)
    return np.array([us.mean(), vs.mean()]) if len(us) else np.full(2, np.nan), int(mask.sum())


def test_matrices_match_pybullet_helpers():
    cam = PinholeCamera(CameraConfig())
    cfg = cam.config
    view = pybullet.computeViewMatrix(cfg.eye, cfg.look_at, cfg.up)
    proj = pybullet.computeProjectionMatrixFOV(cfg.fov_y_deg, cam.aspect, cfg.near, cfg.far)
    np.testing.assert_allclose(cam.pose.view_matrix(), view, atol=1e-6)
    np.testing.assert_allclose(cam.projection_matrix(), proj, atol=1e-6)


def test_optical_frame_is_rep103_z_forward_x_right_y_down():
    cam = PinholeCamera(CameraConfig(eye=(1.2, 0.0, 0.7), look_at=(0.5, 0.0, 0.15)))
    rot = cam.pose.rotation
    forward = np.subtract((0.5, 0.0, 0.15), (1.2, 0.0, 0.7))
    np.testing.assert_allclose(rot[:, 2], forward / np.linalg.norm(forward), atol=1e-12)
    assert rot[1, 0] > 0.99  # looking along -x with z up, image right is base +y
    assert rot[2, 1] < 0.0  # image down points down in the world
    np.testing.assert_allclose(rot.T @ rot, np.eye(3), atol=1e-12)
    assert np.linalg.det(rot) == pytest.approx(1.0)


def test_camera_info_has_camera_info_fields_and_consistent_p():
    info = PinholeCamera(CameraConfig(width=160, height=120)).camera_info()
    assert info["frame_id"] == "camera_optical_frame"
    assert (info["width"], info["height"]) == (160, 120)
    assert len(info["k"]) == 9 and len(info["r"]) == 9 and len(info["p"]) == 12
    assert info["distortion_model"] == "plumb_bob" and info["d"] == [0.0] * 5
    k = np.reshape(info["k"], (3, 3))
    np.testing.assert_allclose(np.reshape(info["p"], (3, 4))[:, :3], k)
    assert k[0, 0] == pytest.approx(k[1, 1])  # square pixels


def test_quaternion_matches_rotation():
    pose = CameraPose.from_look_at((1.2, 0.3, 0.7), (0.5, 0.0, 0.15), (0, 0, 1))
    rot = np.reshape(pybullet.getMatrixFromQuaternion(pose.quaternion.tolist()), (3, 3))
    np.testing.assert_allclose(rot, pose.rotation, atol=1e-9)


def test_rotvec_rotation_is_orthonormal_and_angle_preserving():
    rot = rotation_from_rotvec([0.0, 0.0, 0.3])
    np.testing.assert_allclose(rot @ [1.0, 0.0, 0.0], [np.cos(0.3), np.sin(0.3), 0.0])


@pytest.mark.parametrize("target", [(0.5, 0.0, 0.2), (0.35, -0.25, 0.1), (0.65, 0.25, 0.35),
                                    (0.6, -0.2, 0.3), (0.4, 0.2, 0.15)])
def test_projected_target_centre_matches_rendered_blob(world, target):
    world.reset(seed=3, target_position=np.array(target))
    centroid, pixels = red_blob_centroid(world.render())
    assert pixels >= 10, "target not visible"
    projected = world.camera.project(np.array(target))[0]
    assert np.linalg.norm(centroid - projected) < 1.0


def test_config_rejects_degenerate_camera():
    with pytest.raises(ValueError, match="fov_y_deg"):
        CameraConfig(fov_y_deg=0.0)
    with pytest.raises(ValueError, match="parallel"):
        CameraConfig(eye=(0.0, 0.0, 1.0), look_at=(0.0, 0.0, 0.0), up=(0.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="near"):
        CameraConfig(near=1.0, far=0.5)


def test_egl_renderer_matches_its_intrinsics_or_falls_back_to_tiny():
    with ArmWorld(WorldConfig(use_egl=True)) as egl_world:
        if egl_world.camera.pixel_convention == "tiny":
            pytest.skip("EGL plugin unavailable here; the world fell back to TinyRenderer")
        for target in ((0.5, 0.0, 0.2), (0.35, -0.25, 0.1), (0.65, 0.25, 0.35)):
            egl_world.reset(seed=3, target_position=np.array(target))
            centroid, pixels = red_blob_centroid(egl_world.render())
            assert pixels >= 10
            projected = egl_world.camera.project(np.array(target))[0]
            assert np.linalg.norm(centroid - projected) < 1.0


def test_pixel_conventions_differ_by_half_a_pixel():
    tiny = PinholeCamera(CameraConfig()).intrinsics()
    gl = PinholeCamera(CameraConfig(), pixel_convention="opengl").intrinsics()
    np.testing.assert_allclose(gl[:2, 2] - tiny[:2, 2], [-0.5, 0.5])
    with pytest.raises(ValueError, match="pixel_convention"):
        PinholeCamera(CameraConfig(), pixel_convention="vulkan")
