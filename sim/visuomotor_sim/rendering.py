"""Rendering the world's RGB images: the renderer, the scene camera's render pose,
view and projection, lighting and image noise.

The scene camera is a :class:`~visuomotor_sim.camera.PinholeCamera` at its calibrated pose
(the one published in CameraInfo); each episode renders from that pose moved by the
episode's camera jitter (:class:`~visuomotor_sim.randomization.VisualParams`). A wrist
camera renders from a pose on the hand. Images are (H, W, 3) uint8, C-contiguous.
"""

from __future__ import annotations

import logging
import pkgutil

import numpy as np
import pybullet
from pybullet_utils.bullet_client import BulletClient

from visuomotor_sim.camera import CameraConfig, CameraPose, PinholeCamera
from visuomotor_sim.randomization import VisualParams

_LOG = logging.getLogger(__name__)

_WRIST_CAMERA_OFFSET = 0.02  # m along the hand z axis


def wrist_camera_pose(hand_position: np.ndarray, hand_rotation: np.ndarray) -> CameraPose:
    """The wrist camera's pose: on the hand's z axis, looking along it (base frame, m)."""
    return CameraPose(hand_position + hand_rotation[:, 2] * _WRIST_CAMERA_OFFSET,
                      hand_rotation)


def _choose_renderer(client: BulletClient, use_egl: bool) -> int:
    """The EGL hardware renderer when asked for and its plugin loads, else TinyRenderer."""
    if not use_egl:
        return pybullet.ER_TINY_RENDERER
    egl = pkgutil.get_loader("eglRenderer")
    plugin = -1
    if egl is not None:
        plugin = client.loadPlugin(egl.get_filename(), "_eglRendererPlugin")
    if plugin < 0:
        _LOG.warning("EGL renderer plugin unavailable; rendering with the CPU TinyRenderer")
        return pybullet.ER_TINY_RENDERER
    _LOG.info("rendering with the EGL hardware renderer")
    return pybullet.ER_BULLET_HARDWARE_OPENGL


class SceneRenderer:
    """Renders a PyBullet client's scene through the scene camera or a given pose.

    Args:
        client: the PyBullet client.
        camera: the scene camera's configuration.
        use_egl: render with the EGL plugin when it loads (see
            :class:`~visuomotor_sim.world.WorldConfig`).

    Attributes:
        camera: the scene camera (intrinsics and calibrated pose).
    """

    def __init__(self, client: BulletClient, camera: CameraConfig, use_egl: bool) -> None:
        self._client = client
        self._renderer = _choose_renderer(client, use_egl)
        convention = "opengl" if self._renderer == pybullet.ER_BULLET_HARDWARE_OPENGL else "tiny"
        self.camera = PinholeCamera(camera, pixel_convention=convention)
        self._width, self._height = camera.width, camera.height
        self._projection = self.camera.projection_matrix()
        self._visual = VisualParams()
        self._render_pose = self.camera.pose
        self._view_matrix = self._render_pose.view_matrix()
        self._light_direction = self._unit(self._visual.light_direction)

    @staticmethod
    def _unit(direction: tuple[float, float, float]) -> list[float]:
        light = np.asarray(direction, float)
        return (light / np.linalg.norm(light)).tolist()

    def apply_visual(self, v: VisualParams) -> None:
        """Take an episode's camera jitter, lighting and image noise."""
        self._visual = v
        jitter = np.asarray(v.camera_pose_jitter)
        self._render_pose = self.camera.pose.perturbed(jitter[:3], jitter[3:])
        self._view_matrix = self._render_pose.view_matrix()
        self._projection = self.camera.projection_matrix()
        self._light_direction = self._unit(v.light_direction)

    @property
    def render_pose(self) -> CameraPose:
        """Pose the scene camera's image is rendered from (calibrated pose + jitter)."""
        return self._render_pose

    def render(self, rng: np.random.Generator) -> np.ndarray:
        """RGB image from the scene camera, (H, W, 3) uint8; pixel noise drawn from ``rng``."""
        return self._render(self._view_matrix, rng)

    def render_from(self, pose: CameraPose, rng: np.random.Generator) -> np.ndarray:
        """RGB image from ``pose`` with the scene camera's intrinsics, (H, W, 3) uint8."""
        return self._render(pose.view_matrix(), rng)

    def _render(self, view: list[float], rng: np.random.Generator) -> np.ndarray:
        v, width, height = self._visual, self._width, self._height
        _, _, rgba, _, _ = self._client.getCameraImage(
            width, height, viewMatrix=view, projectionMatrix=self._projection,
            lightDirection=self._light_direction, lightColor=list(v.light_colour),
            shadow=0, flags=pybullet.ER_NO_SEGMENTATION_MASK, renderer=self._renderer)
        rgb = np.asarray(rgba, dtype=np.uint8).reshape(height, width, 4)[:, :, :3]
        if v.image_noise > 0.0:
            noisy = rgb + rng.normal(0.0, v.image_noise, rgb.shape)
            return np.clip(noisy, 0.0, 255.0).astype(np.uint8)
        return np.ascontiguousarray(rgb)
