"""Pinhole camera model shared by the renderer and the published CameraInfo.

The camera is described by a pose in the robot base frame (the robot description's
``base_frame``) and a vertical field of view. Everything a renderer or a consumer needs
is derived from those two things in one place, so the OpenGL matrices PyBullet renders with and the
``K``/``P`` matrices published in ``sensor_msgs/CameraInfo`` can never disagree:

* optical frame (REP-103): z forward (viewing direction), x right, y down;
* OpenGL camera frame: x right, y up, z backward (= optical frame rotated by pi about x);
* pixel coordinates: ``u`` right, ``v`` down, the centre of the top-left pixel at (0, 0).

Pure numpy; no PyBullet import.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from visuomotor_core.rotations import quaternion_from_rotation, rotation_from_rotvec

OPTICAL_FRAME_ID = "camera_optical_frame"

# Optical frame (z forward, y down) -> OpenGL camera frame (z backward, y up).
_OPTICAL_TO_GL = np.diag([1.0, -1.0, -1.0])


@dataclass(frozen=True)
class CameraConfig:
    """A fixed RGB camera looking at the workspace.

    Attributes:
        width, height: image size in pixels.
        fov_y_deg: vertical field of view in degrees (pixels are square).
        near, far: OpenGL clip planes in metres.
        eye: camera position in the base frame, metres.
        look_at: point the optical axis passes through, base frame, metres.
        up: world direction that appears "up" in the image (base frame).
        frame_id: ``header.frame_id`` of the published images and CameraInfo.
    """

    width: int = 128
    height: int = 128
    fov_y_deg: float = 50.0
    near: float = 0.05
    far: float = 3.0
    eye: tuple[float, float, float] = (1.2, 0.0, 0.7)
    look_at: tuple[float, float, float] = (0.5, 0.0, 0.15)
    up: tuple[float, float, float] = (0.0, 0.0, 1.0)
    frame_id: str = OPTICAL_FRAME_ID

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"CameraConfig: image size must be positive, got "
                             f"{self.width}x{self.height}")
        if not 1.0 <= self.fov_y_deg <= 170.0:
            raise ValueError(f"CameraConfig.fov_y_deg must be in [1, 170] deg, got "
                             f"{self.fov_y_deg}")
        if not 0.0 < self.near < self.far:
            raise ValueError(f"CameraConfig: need 0 < near < far, got near={self.near} "
                             f"far={self.far}")
        for name in ("eye", "look_at", "up"):
            if len(getattr(self, name)) != 3:
                raise ValueError(f"CameraConfig.{name} must have 3 components")
        forward = np.subtract(self.look_at, self.eye)
        if np.linalg.norm(forward) < 1e-6:
            raise ValueError("CameraConfig: eye and look_at coincide")
        if np.linalg.norm(np.cross(forward, self.up)) < 1e-6:
            raise ValueError("CameraConfig: up is parallel to the viewing direction")


def look_at_rotation(eye, look_at, up) -> np.ndarray:
    """Rotation (3, 3) whose columns are the optical frame's x, y, z axes in the base frame."""
    z = np.asarray(look_at, float) - np.asarray(eye, float)
    z /= np.linalg.norm(z)
    x = np.cross(z, np.asarray(up, float))
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return np.stack([x, y, z], axis=1)


@dataclass(frozen=True)
class CameraPose:
    """Pose of the optical frame in the base frame.

    Attributes:
        position: optical centre, metres, base frame (3,).
        rotation: columns = optical x (right), y (down), z (forward) in the base frame (3, 3).
    """

    position: np.ndarray
    rotation: np.ndarray

    @classmethod
    def from_look_at(cls, eye, look_at, up) -> CameraPose:
        return cls(np.asarray(eye, float).copy(), look_at_rotation(eye, look_at, up))

    def perturbed(self, translation, rotvec) -> CameraPose:
        """This pose moved by ``translation`` (m, base frame) and turned by ``rotvec``
        (rad, optical frame)."""
        return CameraPose(self.position + np.asarray(translation, float),
                          self.rotation @ rotation_from_rotvec(rotvec))

    @property
    def quaternion(self) -> np.ndarray:
        """Orientation as (x, y, z, w)."""
        return quaternion_from_rotation(self.rotation)

    def view_matrix(self) -> list[float]:
        """OpenGL view matrix (world -> GL camera), column-major, 16 floats for PyBullet."""
        rot_gl = self.rotation @ _OPTICAL_TO_GL
        view = np.eye(4)
        view[:3, :3] = rot_gl.T
        view[:3, 3] = -rot_gl.T @ self.position
        return view.T.reshape(-1).tolist()


PIXEL_CONVENTIONS: tuple[str, ...] = ("tiny", "opengl")
"""Where a renderer samples pixels: ``tiny`` = PyBullet's TinyRenderer (CPU), ``opengl`` =
hardware OpenGL/EGL (pixel centres at half-integer window coordinates)."""


@dataclass(frozen=True)
class PinholeCamera:
    """Intrinsics and nominal extrinsics of one camera, derived from a :class:`CameraConfig`.

    ``pixel_convention`` (one of :data:`PIXEL_CONVENTIONS`) names the renderer whose images
    ``K`` must describe; the two differ by half a pixel.
    """

    config: CameraConfig
    pixel_convention: str = "tiny"
    pose: CameraPose = field(init=False)

    def __post_init__(self) -> None:
        if self.pixel_convention not in PIXEL_CONVENTIONS:
            raise ValueError(f"PinholeCamera.pixel_convention must be one of "
                             f"{PIXEL_CONVENTIONS}, got '{self.pixel_convention}'")
        cfg = self.config
        object.__setattr__(self, "pose", CameraPose.from_look_at(cfg.eye, cfg.look_at, cfg.up))

    @property
    def aspect(self) -> float:
        return self.config.width / self.config.height

    def projection_matrix(self) -> list[float]:
        """OpenGL perspective projection, column-major, 16 floats (same as PyBullet's
        ``computeProjectionMatrixFOV(fov_y_deg, width/height, near, far)``)."""
        cfg = self.config
        f = 1.0 / math.tan(math.radians(cfg.fov_y_deg) / 2.0)
        n, fa = cfg.near, cfg.far
        proj = np.zeros((4, 4))
        proj[0, 0] = f / self.aspect
        proj[1, 1] = f
        proj[2, 2] = (fa + n) / (n - fa)
        proj[2, 3] = 2.0 * fa * n / (n - fa)
        proj[3, 2] = -1.0
        return proj.T.reshape(-1).tolist()

    def intrinsics(self) -> np.ndarray:
        """K (3, 3) in pixels, read off the OpenGL projection so both always agree.

        PyBullet's TinyRenderer samples pixel column ``u`` at NDC x = 2u / W - 1 and writes
        rows bottom-up, so row ``v`` samples NDC y = 2 (H - 1 - v) / H - 1 (measured: blob
        centroids match to ~0.1 px). Solving for the pixel of a point with NDC
        (P00 x + P02 z) / -z gives the K below (z = -z_gl = optical depth). Hardware
        OpenGL samples pixel centres, NDC x = 2 (u + 0.5) / W - 1, likewise for rows.
        """
        proj = np.asarray(self.projection_matrix()).reshape(4, 4).T
        w, h = self.config.width, self.config.height
        fx = proj[0, 0] * w / 2.0
        fy = proj[1, 1] * h / 2.0
        cx = (1.0 - proj[0, 2]) * w / 2.0
        cy = (1.0 + proj[1, 2]) * h / 2.0 - 1.0
        if self.pixel_convention == "opengl":
            cx -= 0.5
            cy += 0.5
        return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])

    def project(self, points_base, pose: CameraPose | None = None) -> np.ndarray:
        """Pixel coordinates (N, 2) of base-frame points (N, 3) seen from ``pose``
        (default: the nominal pose). Points behind the camera give non-finite values."""
        p = np.atleast_2d(np.asarray(points_base, float))
        cam = pose if pose is not None else self.pose
        in_optical = (p - cam.position) @ cam.rotation
        uvw = in_optical @ self.intrinsics().T
        with np.errstate(divide="ignore", invalid="ignore"):
            return uvw[:, :2] / uvw[:, 2:3]

    def camera_info(self) -> dict:
        """A dict with the fields of ``sensor_msgs/CameraInfo`` (no header stamp).

        ``P = K [I | 0]`` (monocular), plumb-bob model with zero distortion.
        """
        k = self.intrinsics()
        p = np.zeros((3, 4))
        p[:, :3] = k
        return {
            "frame_id": self.config.frame_id,
            "width": self.config.width,
            "height": self.config.height,
            "distortion_model": "plumb_bob",
            "d": [0.0] * 5,
            "k": k.reshape(-1).tolist(),
            "r": np.eye(3).reshape(-1).tolist(),
            "p": p.reshape(-1).tolist(),
        }
