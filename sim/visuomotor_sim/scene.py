"""The scene around the arm: a box table and a visual-only target sphere on a thin post.

Frames and units: base frame (the world frame), the table top is the plane z = 0; m.
The target has no collision shape, so the arm passes through it; the post under the
sphere is a monocular depth cue, long enough to reach below the table top from the
highest target (the table hides the rest).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pybullet
from pybullet_utils.bullet_client import BulletClient

from visuomotor_sim.randomization import VisualParams


@dataclass(frozen=True)
class TargetConfig:
    """Where targets may appear and how they look.

    Attributes:
        x_range, y_range, z_range: (low, high) of the sphere centre, m, base frame.
        radius: sphere radius, m.
        post_radius: radius of the thin post under the sphere (monocular depth cue), m.
        post_colour: RGB of the post.
    """

    x_range: tuple[float, float] = (0.35, 0.65)
    y_range: tuple[float, float] = (-0.25, 0.25)
    z_range: tuple[float, float] = (0.10, 0.35)
    radius: float = 0.02
    post_radius: float = 0.004
    post_colour: tuple[float, float, float] = (0.25, 0.25, 0.25)

    def __post_init__(self) -> None:
        for name in ("x_range", "y_range", "z_range"):
            low, high = getattr(self, name)
            if low > high:
                raise ValueError(f"TargetConfig.{name}: low {low} > high {high}")
        if self.z_range[0] <= self.radius:
            raise ValueError(f"TargetConfig.z_range low {self.z_range[0]} m must be above the "
                             f"table by more than the radius {self.radius} m")
        if self.radius <= 0.0 or self.post_radius <= 0.0:
            raise ValueError("TargetConfig: radius and post_radius must be positive")

    @property
    def low(self) -> np.ndarray:
        return np.array([self.x_range[0], self.y_range[0], self.z_range[0]])

    @property
    def high(self) -> np.ndarray:
        return np.array([self.x_range[1], self.y_range[1], self.z_range[1]])

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        """A uniformly drawn sphere centre (3,), m, base frame."""
        return rng.uniform(self.low, self.high)


class Scene:
    """The table, the target sphere and its post in one PyBullet client.

    Args:
        client: the PyBullet client.
        table_half_extents: half sizes of the box table, m; its top is the plane z = 0.
        table_centre_xy: table centre in the base frame, m.
        target: target sampling ranges and looks.

    Attributes:
        table, target_body, post_body: PyBullet body ids.
    """

    def __init__(self, client: BulletClient, table_half_extents: tuple[float, float, float],
                 table_centre_xy: tuple[float, float], target: TargetConfig) -> None:
        self._client = client
        self.table = self._create_table(table_half_extents, table_centre_xy)
        self._post_length = target.z_range[1] + 2.0 * table_half_extents[2]
        self.target_body, self.post_body = self._create_target(target)
        self._target = np.zeros(3)

    def _create_table(self, half_extents: tuple[float, float, float],
                      centre_xy: tuple[float, float]) -> int:
        c = self._client
        half = list(half_extents)
        colour = [*VisualParams().table_colour, 1.0]
        visual = c.createVisualShape(pybullet.GEOM_BOX, halfExtents=half, rgbaColor=colour)
        collision = c.createCollisionShape(pybullet.GEOM_BOX, halfExtents=half)
        centre = [centre_xy[0], centre_xy[1], -half[2]]
        return c.createMultiBody(0.0, collision, visual, centre)

    def _create_target(self, tcfg: TargetConfig) -> tuple[int, int]:
        """Visual-only sphere and its post."""
        c = self._client
        sphere = c.createVisualShape(pybullet.GEOM_SPHERE, radius=tcfg.radius,
                                     rgbaColor=[*VisualParams().object_colour, 1.0])
        post = c.createVisualShape(pybullet.GEOM_CYLINDER, radius=tcfg.post_radius,
                                   length=self._post_length,
                                   rgbaColor=[*tcfg.post_colour, 1.0])
        target = c.createMultiBody(0.0, -1, sphere, [0.5, 0.0, 0.2])
        post_body = c.createMultiBody(0.0, -1, post, [0.5, 0.0, 0.0])
        return target, post_body

    def apply_visual(self, v: VisualParams) -> None:
        """Colour the target sphere and the table as the episode's visual parameters say."""
        c = self._client
        c.changeVisualShape(self.target_body, -1, rgbaColor=[*v.object_colour, 1.0])
        c.changeVisualShape(self.table, -1, rgbaColor=[*v.table_colour, 1.0])

    @property
    def target_position(self) -> np.ndarray:
        """Target sphere centre, m, base frame (copy)."""
        return self._target.copy()

    def set_target(self, position: np.ndarray) -> None:
        """Move the target sphere (and its post) to ``position`` (3,), m, base frame."""
        self._target = np.asarray(position, float).reshape(3).copy()
        c, identity = self._client, [0.0, 0.0, 0.0, 1.0]
        c.resetBasePositionAndOrientation(self.target_body, self._target.tolist(), identity)
        post_centre = [self._target[0], self._target[1],
                       self._target[2] - self._post_length / 2.0]
        c.resetBasePositionAndOrientation(self.post_body, post_centre, identity)
