"""Rotations in numpy: quaternions (x, y, z, w, ROS/PyBullet order), rotation vectors and
matrices, and the right Jacobian of the rotation vector (for Gauss-Newton on a pose). One
implementation for the core's camera geometry and the sim's camera."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def rotation_from_quaternion(quaternion_xyzw: Sequence[float]) -> np.ndarray:
    """Rotation matrix (3, 3) of a unit quaternion (x, y, z, w)."""
    x, y, z, w = (float(v) for v in quaternion_xyzw)
    return np.array([
        [1.0 - 2.0 * (y * y + z * z), 2.0 * (x * y - z * w), 2.0 * (x * z + y * w)],
        [2.0 * (x * y + z * w), 1.0 - 2.0 * (x * x + z * z), 2.0 * (y * z - x * w)],
        [2.0 * (x * z - y * w), 2.0 * (y * z + x * w), 1.0 - 2.0 * (x * x + y * y)],
    ])


def quaternion_from_rotation(rotation: np.ndarray) -> np.ndarray:
    """Unit quaternion (x, y, z, w) of a rotation matrix (3, 3), w >= 0 (Shepperd's method:
    exact for small angles too)."""
    m = np.asarray(rotation, np.float64)
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    if trace > 0.0:
        s = 2.0 * math.sqrt(trace + 1.0)
        q = [(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s,
             0.25 * s]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = [0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s,
             (m[2, 1] - m[1, 2]) / s]
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = [(m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s,
             (m[0, 2] - m[2, 0]) / s]
    else:
        s = 2.0 * math.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = [(m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s,
             (m[1, 0] - m[0, 1]) / s]
    quat = np.asarray(q)
    quat /= np.linalg.norm(quat)
    return quat if quat[3] >= 0.0 else -quat


def rotvec_from_rotation(rotation: np.ndarray) -> np.ndarray:
    """Rotation vector (3,), rad, of a rotation matrix (the inverse of Rodrigues' formula;
    exact for small angles, where ``cv2.Rodrigues`` rounds to zero)."""
    q = quaternion_from_rotation(rotation)
    sine = float(np.linalg.norm(q[:3]))
    if sine < 1e-12:
        return 2.0 * q[:3]  # first order: angle * axis
    return q[:3] * (2.0 * math.atan2(sine, q[3]) / sine)


def rotation_angle(a: np.ndarray, b: np.ndarray) -> float:
    """Angle of the rotation taking orientation ``a`` to ``b`` (both (3, 3)), rad."""
    cosine = (float(np.trace(np.asarray(a).T @ np.asarray(b))) - 1.0) / 2.0
    return math.acos(min(1.0, max(-1.0, cosine)))


def rotation_from_rotvec(rotvec: np.ndarray) -> np.ndarray:
    """Rodrigues' formula: rotation matrix (3, 3) of a rotation vector (rad)."""
    angle = float(np.linalg.norm(rotvec))
    if angle < 1e-12:
        return np.eye(3)
    k = np.asarray(rotvec, np.float64) / angle
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + math.sin(angle) * kx + (1.0 - math.cos(angle)) * (kx @ kx)


#: Below this angle (rad) :func:`rotation_and_right_jacobian` uses Taylor series (relative
#: error < 1e-15).
_SERIES_ANGLE = 1e-3


def rotation_and_right_jacobian(rotvec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotation matrix ``R`` (3, 3) of the rotation vector ``w`` (rad) and its right
    Jacobian ``J`` (3, 3): for a small ``d``, ``Exp(w + d) ~= Exp(w) Exp(J d)``.

    With ``a = |w|`` and ``W = [w]x``: ``R = I + sin(a)/a W + (1 - cos a)/a^2 W^2`` (as
    :func:`rotation_from_rotvec`) and ``J = I - (1 - cos a)/a^2 W + (a - sin a)/a^3 W^2``.
    """
    x, y, z = (float(v) for v in rotvec)
    a2 = x * x + y * y + z * z
    if a2 < _SERIES_ANGLE * _SERIES_ANGLE:
        s = 1.0 - a2 / 6.0 * (1.0 - a2 / 20.0)  # sin(a) / a
        c = 0.5 - a2 / 24.0 * (1.0 - a2 / 30.0)  # (1 - cos a) / a^2
        d = 1.0 / 6.0 - a2 / 120.0 * (1.0 - a2 / 42.0)  # (a - sin a) / a^3
    else:
        a = math.sqrt(a2)
        s = math.sin(a) / a
        c = (1.0 - math.cos(a)) / a2
        d = (a - math.sin(a)) / (a2 * a)
    # W^2 = w w^T - a^2 I
    xx, yy, zz, xy, xz, yz = x * x - a2, y * y - a2, z * z - a2, x * y, x * z, y * z
    rotation = np.array([[1.0 + c * xx, c * xy - s * z, c * xz + s * y],
                         [c * xy + s * z, 1.0 + c * yy, c * yz - s * x],
                         [c * xz - s * y, c * yz + s * x, 1.0 + c * zz]])
    jacobian = np.array([[1.0 + d * xx, d * xy + c * z, d * xz - c * y],
                         [d * xy - c * z, 1.0 + d * yy, d * yz + c * x],
                         [d * xz + c * y, d * yz - c * x, 1.0 + d * zz]])
    return rotation, jacobian
