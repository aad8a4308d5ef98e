"""Simulation benchmark: physics steps/s and camera frames/s, ours vs PyBullet defaults.

"ours" is the project's scene and render settings (low-poly robot visuals, box table,
TinyRenderer, no shadows, no segmentation mask). "default" is the same camera on a scene
built the usual way (full visual meshes, ``plane.urdf``) rendered with
``getCameraImage``'s default flags (shadows on, segmentation mask computed).

Run: ``bench-sim`` or ``python -m visuomotor_sim.bench [--frames N] [--steps N]``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence

import numpy as np
import pybullet
import pybullet_data
from pybullet_utils.bullet_client import BulletClient

from visuomotor_sim.camera import CameraConfig, PinholeCamera
from visuomotor_sim.robot import sim_urdf
from visuomotor_sim.world import ArmWorld, WorldConfig

SIZES: tuple[int, ...] = (64, 128, 224)


def rate(fn: Callable[[], object], count: int) -> float:
    """Calls per second of ``fn`` over ``count`` calls (after one warm-up call)."""
    fn()
    start = time.perf_counter()
    for _ in range(count):
        fn()
    return count / (time.perf_counter() - start)


def physics_rate(steps: int) -> float:
    """Physics steps/s of the world under a joint-space hold (read state, command, step)."""
    with ArmWorld() as world:
        world.reset(seed=0)
        hold = world.true_joint_positions()

        def tick() -> None:
            world.joint_state()
            world.apply_command(hold, "position")
            world.step()

        return rate(tick, steps)


def env_rate(steps: int, physics_hz: float = 1000.0) -> float:
    """State-only ``VisualReachEnv`` steps/s (controller + physics for one 50 ms period)."""
    from visuomotor_sim.env import EnvConfig, VisualReachEnv

    config = EnvConfig(render_images=False, world=WorldConfig(physics_hz=physics_hz))
    with VisualReachEnv(config) as env:
        env.reset(seed=0)
        action = np.zeros(env.action_space.shape, np.float32)

        def env_step() -> None:
            _, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                env.reset()

        return rate(env_step, steps)


def ours_frame_rate(size: int, frames: int) -> float:
    """Frames/s of :meth:`ArmWorld.render` at ``size`` x ``size``."""
    config = WorldConfig(camera=CameraConfig(width=size, height=size))
    with ArmWorld(config) as world:
        world.reset(seed=0)
        return rate(world.render, frames)


def default_frame_rate(size: int, frames: int) -> float:
    """Frames/s with PyBullet's usual scene and default getCameraImage settings."""
    client = BulletClient(connection_mode=pybullet.DIRECT)
    try:
        client.setAdditionalSearchPath(pybullet_data.getDataPath())
        client.loadURDF("plane.urdf")
        client.loadURDF(sim_urdf(WorldConfig().description), useFixedBase=True)
        cam = PinholeCamera(CameraConfig(width=size, height=size))
        view, proj = cam.pose.view_matrix(), cam.projection_matrix()
        return rate(lambda: client.getCameraImage(size, size, view, proj), frames)
    finally:
        client.disconnect()


def format_table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(r, widths, strict=True))
                     for r in rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench-sim",
        description="Measure PyBullet physics steps/s and camera frames/s at 64², 128² and "
                    "224², with this project's render settings and with PyBullet defaults.")
    parser.add_argument("--frames", type=int, default=30,
                        help="frames rendered per size and setting (default 30)")
    parser.add_argument("--steps", type=int, default=3000,
                        help="physics steps timed (default 3000)")
    parser.add_argument("--env-steps", type=int, default=200,
                        help="state-only env steps timed per physics rate (default 200)")
    args = parser.parse_args(argv)

    print(f"physics: {physics_rate(args.steps):,.0f} steps/s "
          f"(read state + command + step, 1 kHz world)")
    for hz in (1000.0, 500.0):
        print(f"env (state-only, {hz:.0f} Hz physics, 20 Hz policy): "
              f"{env_rate(args.env_steps, hz):,.0f} steps/s")
    rows = [["size", "ours fps", "ours ms", "default fps", "default ms", "speed-up"]]
    for size in SIZES:
        ours, default = ours_frame_rate(size, args.frames), default_frame_rate(size, args.frames)
        rows.append([f"{size}x{size}", f"{ours:.1f}", f"{1e3 / ours:.2f}", f"{default:.1f}",
                     f"{1e3 / default:.2f}", f"{ours / default:.1f}x"])
    print(format_table(rows))
    return 0 if np.isfinite(ours) else 1


if __name__ == "__main__":
    raise SystemExit(main())
