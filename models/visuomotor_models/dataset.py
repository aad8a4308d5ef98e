"""Encoder dataset rendered through the simulation.

Each sample is one :meth:`visuomotor_sim.world.ArmWorld.reset` with visual
parameters drawn from a randomization profile (light, colours, camera pose jitter,
image noise), a target drawn from the world's target ranges and an arm configuration
drawn around home (``arm_noise_std``), followed by one render of the scene camera.
A share of the samples (``near_target_fraction``) then moves the arm so that its grasp
point is near the target, as in the last part of a reach where the hand comes close to
(and partly hides) the sphere: inverse kinematics of the grasp link to the target
plus an offset of radius up to ``near_target_radius`` (biased toward small radii), in a
uniform direction or along the way back toward where the hand started, with the drawn
arm configuration as the null-space rest posture and the joint limits respected.
Labels: the target centre (m, the robot's base frame), its visible fraction
(share of rays from the rendering camera to points on the sphere that nothing blocks,
0 when it projects outside the image), the pixel coordinates (u right, v down) of the
:data:`KEYPOINTS` as rendered (jittered camera pose) with the visibility of each, and
the grasp point (m, base frame), for error statistics by hand–target distance.

Keypoints: the sphere centre and the foot of its post on the table (the target), and
five fixed scene landmarks whose base-frame positions are known (:func:`landmarks`): the
two far corners of the table, the robot's base origin, its shoulder (the origin of the
second arm joint, which the first joint only turns about the vertical) and the point
half-way between them on the first joint's axis. Knowing where the
landmarks appear lets the run time find the camera's actual pose, so a camera knocked off
its calibration does not move the estimate (see ``visuomotor_core.camera_geometry``).

Every sample's randomness derives from ``(seed, split, index)`` only, so a dataset is
identical however it is split across worker processes.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

_SPLIT_IDS = {"train": 0, "heldout": 1}
_FORMAT_VERSION = 4
_CHUNK = 200
_IK_ITERATIONS = 200
_IK_RESIDUAL = 1e-5  # m
_APPROACH_SHARE = 0.5  # near-target offsets along the hand's way in (the rest uniform)
_APPROACH_SPREAD = 0.4  # std of the noise added to the unit approach direction
_MIN_GOAL_HEIGHT = 0.03  # m above the table for the grasp point's IK goal
_VISIBILITY_OFFSETS = ((0.0, 0.0), (0.7, 0.0), (-0.7, 0.0), (0.0, 0.7), (0.0, -0.7))
_FOOT_LIFT = 0.003  # m: visibility rays end this far above the table (the post's foot)
#: Image keypoints labelled per sample, in this order (the encoder's ``keypoints`` rows).
KEYPOINTS = ("target_centre", "target_foot", "table_corner_left", "table_corner_right",
             "robot_base", "robot_waist", "robot_shoulder")
TARGET_KEYPOINTS = 2  # the first two follow the target; the rest are fixed landmarks


@dataclass(frozen=True)
class DatasetConfig:
    """What to render.

    Attributes:
        n_train: training images (``train_profile``).
        n_heldout: evaluation images (``heldout_profile``: visual conditions never trained on).
        train_profile, heldout_profile: randomization profile names.
        arm_noise_std: std of the arm's joint angles around home, rad.
        near_target_fraction: share of samples whose arm is then placed with its grasp
            point near the target (see the module docstring).
        near_target_radius: largest grasp-point offset from the target in those samples,
            m; radii are drawn as ``near_target_radius * u**2``, u uniform in [0, 1]
            (median a quarter of it).
        seed: base seed of every draw.
        workers: rendering processes.
    """

    n_train: int = 18000
    n_heldout: int = 1000
    train_profile: str = "training"
    heldout_profile: str = "heldout"
    arm_noise_std: float = 0.3
    near_target_fraction: float = 0.5
    near_target_radius: float = 0.15
    seed: int = 0
    workers: int = 2

    def __post_init__(self) -> None:
        if self.n_train <= 0 or self.n_heldout <= 0:
            raise ValueError("DatasetConfig: n_train and n_heldout must be positive")
        if not 0.0 <= self.arm_noise_std <= 1.0:
            raise ValueError(f"DatasetConfig.arm_noise_std must be in [0, 1] rad, got "
                             f"{self.arm_noise_std}")
        if not 0.0 <= self.near_target_fraction <= 1.0:
            raise ValueError(f"DatasetConfig.near_target_fraction must be in [0, 1], got "
                             f"{self.near_target_fraction}")
        if not 0.0 < self.near_target_radius <= 0.5:
            raise ValueError(f"DatasetConfig.near_target_radius must be in (0, 0.5] m, got "
                             f"{self.near_target_radius}")
        if self.workers < 1:
            raise ValueError("DatasetConfig.workers must be >= 1")

    def cache_key(self) -> str:
        """Hash of everything that changes the rendered data (not ``workers``)."""
        fields = {k: v for k, v in asdict(self).items() if k != "workers"}
        fields["format"] = _FORMAT_VERSION
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Split:
    """Rendered images (N, H, W, 3) uint8 RGB, targets (N, 3) m, visible (N,) in [0, 1]
    (the sphere's visible fraction), pixels (N, K, 2): (u, v) of the :data:`KEYPOINTS`,
    keypoint_visible (N, K) in [0, 1], grasp (N, 3): the grasp point, m (positions in the
    robot's base frame)."""

    images: np.ndarray
    targets: np.ndarray
    visible: np.ndarray
    pixels: np.ndarray
    keypoint_visible: np.ndarray
    grasp: np.ndarray

    def subset(self, index) -> Split:
        return Split(*(getattr(self, f)[index] for f in _FIELDS))

    def hand_distance(self) -> np.ndarray:
        """Grasp point to target centre distance (N,), m."""
        return np.linalg.norm(self.grasp - self.targets, axis=1)


_FIELDS = ("images", "targets", "visible", "pixels", "keypoint_visible", "grasp")
_WORLD = None


def _world(arm_noise_std: float):
    global _WORLD
    if _WORLD is None:
        from visuomotor_sim.world import ArmWorld, WorldConfig

        _WORLD = ArmWorld(WorldConfig(home_noise_std=arm_noise_std))
    return _WORLD


def visible_fraction(world) -> float:
    """Share of rays from the rendering camera to the target sphere that nothing blocks.

    The target and its post are visual-only bodies, so rays hit only the robot and the
    table, whose collision shapes are what the camera renders."""
    pose = world.render_camera_pose()
    target = world.target_position
    uv = world.camera.project(target, pose)[0]
    cfg = world.config.camera
    if not (np.all(np.isfinite(uv)) and 0 <= uv[0] < cfg.width and 0 <= uv[1] < cfg.height):
        return 0.0
    radius = world.config.target.radius
    right, down = pose.rotation[:, 0], pose.rotation[:, 1]
    ends = [target + radius * (a * right + b * down) for a, b in _VISIBILITY_OFFSETS]
    hits = world.client.rayTestBatch([pose.position.tolist()] * len(ends),
                                     [e.tolist() for e in ends])
    return float(np.mean([hit[0] < 0 for hit in hits]))


def landmarks(world) -> dict[str, np.ndarray]:
    """Base-frame positions (m) of the fixed scene landmarks among :data:`KEYPOINTS`."""
    cfg = world.config
    far_x = cfg.table_centre_xy[0] - cfg.table_half_extents[0]
    half_y = cfg.table_half_extents[1]
    shoulder = world.client.getLinkState(world.robot, world.arm_joints[1])[4]
    # The camera looks along -x with z up, so the image's right is +y.
    return {"table_corner_left": np.array([far_x, -half_y, 0.0]),
            "table_corner_right": np.array([far_x, half_y, 0.0]),
            "robot_base": np.zeros(3),
            "robot_waist": 0.5 * np.asarray(shoulder, float),
            "robot_shoulder": np.asarray(shoulder, float)}


def keypoint_points(world) -> np.ndarray:
    """(K, 3) base-frame positions of the :data:`KEYPOINTS` in this episode."""
    target = world.target_position
    fixed = landmarks(world)
    return np.stack([target, np.array([target[0], target[1], 0.0]),
                     *(fixed[name] for name in KEYPOINTS[TARGET_KEYPOINTS:])])


def keypoint_pixels(world) -> np.ndarray:
    """(K, 2) pixel coordinates of the :data:`KEYPOINTS` as rendered (with the episode's
    camera jitter)."""
    return world.camera.project(keypoint_points(world), world.render_camera_pose())


def keypoint_visibility(world, pixels: np.ndarray) -> np.ndarray:
    """(K,) visibility of the :data:`KEYPOINTS`: the sphere's visible fraction
    (:func:`visible_fraction`); for the others 1 when the point projects into the image and
    the first thing a ray from the camera meets on its way there is nothing, or the body
    (table) or robot link the landmark belongs to, else 0."""
    cfg = world.config.camera
    inside = np.all(np.isfinite(pixels), axis=1) & (pixels[:, 0] >= 0) \
        & (pixels[:, 0] <= cfg.width - 1) & (pixels[:, 1] >= 0) & (pixels[:, 1] <= cfg.height - 1)
    camera = world.render_camera_pose().position
    points = keypoint_points(world)
    ends = points.copy()
    ends[1, 2] += _FOOT_LIFT
    ends[2:4, 2] += _FOOT_LIFT
    shoulder_link = world.arm_joints[1]
    own = {1: None, 2: (world.table, None), 3: (world.table, None),
           4: (world.robot, -1), 5: (world.robot, world.arm_joints[0]),
           6: (world.robot, shoulder_link)}
    hits = world.client.rayTestBatch([camera.tolist()] * (len(points) - 1),
                                     [e.tolist() for e in ends[1:]])
    out = np.zeros(len(points))
    out[0] = visible_fraction(world)
    for k, hit in enumerate(hits, start=1):
        body, link = hit[0], hit[1]
        if body < 0:
            out[k] = 1.0
        elif own[k] is not None and body == own[k][0] and (own[k][1] is None
                                                            or link <= own[k][1]):
            out[k] = 1.0
        out[k] *= float(inside[k])
    return out


def near_target_goal(target: np.ndarray, hand: np.ndarray, max_radius: float,
                     rng: np.random.Generator) -> np.ndarray:
    """A grasp-point goal (3,) near ``target`` (3,): an offset of radius
    ``max_radius * u**2`` (m), along the direction back toward ``hand`` (where the hand
    starts, with some spread) for a share of draws and uniform on the sphere otherwise,
    kept ``_MIN_GOAL_HEIGHT`` above the table. Base frame, m."""
    if rng.random() < _APPROACH_SHARE:
        way_back = hand - target
        direction = way_back / max(np.linalg.norm(way_back), 1e-9)
        direction = direction + rng.normal(0.0, _APPROACH_SPREAD, 3)
    else:
        direction = rng.normal(0.0, 1.0, 3)
    direction /= max(np.linalg.norm(direction), 1e-9)
    goal = target + max_radius * rng.random() ** 2 * direction
    goal[2] = max(goal[2], _MIN_GOAL_HEIGHT)
    return goal


def place_grasp_point(world, goal: np.ndarray) -> None:
    """Set the arm (at rest) so that its grasp point is as close to ``goal`` (3,), m, base
    frame, as inverse kinematics gets it, within the joint limits, with the current arm
    configuration as the null-space rest posture. Fingers are left as they are."""
    c, robot = world.client, world.robot
    lower, upper = world.limits.lower, world.limits.upper
    fingers = [c.getJointState(robot, j)[0] for j in world.finger_joints]
    rest = list(world.true_joint_positions()) + fingers
    q = c.calculateInverseKinematics(
        robot, world.grasp_link, np.asarray(goal, float).tolist(),
        lowerLimits=[*lower, *fingers], upperLimits=[*upper, *fingers],
        jointRanges=[*(upper - lower), 1e-3, 1e-3], restPoses=rest,
        maxNumIterations=_IK_ITERATIONS, residualThreshold=_IK_RESIDUAL)
    q = np.clip(np.asarray(q[:len(world.arm_joints)]), lower, upper)
    for joint, angle in zip(world.arm_joints, q, strict=True):
        c.resetJointState(robot, joint, float(angle), 0.0)
    # Ray tests (visible fraction) see the moved links only once the broadphase knows them.
    c.performCollisionDetection()


def _render_chunk(args: tuple) -> tuple:
    from visuomotor_sim.randomization import DomainRandomizer, load_profile

    config, split, start, count = args
    profile = load_profile(config.train_profile if split == "train" else config.heldout_profile)
    world = _world(config.arm_noise_std)
    cam = world.config.camera
    images = np.empty((count, cam.height, cam.width, 3), np.uint8)
    targets = np.empty((count, 3))
    visible = np.empty(count)
    pixels = np.empty((count, len(KEYPOINTS), 2))
    keypoint_visible = np.empty((count, len(KEYPOINTS)))
    grasp = np.empty((count, 3))
    for k in range(count):
        index = start + k
        rng = np.random.default_rng([config.seed, _SPLIT_IDS[split], index])
        _, visual = DomainRandomizer(profile, rng).sample()
        targets[k] = world.reset(int(rng.integers(2**31)), visual=visual)
        if rng.random() < config.near_target_fraction:
            goal = near_target_goal(targets[k], world.grasp_point(),
                                    config.near_target_radius, rng)
            place_grasp_point(world, goal)
        images[k] = world.render()
        pixels[k] = keypoint_pixels(world)
        keypoint_visible[k] = keypoint_visibility(world, pixels[k])
        visible[k] = keypoint_visible[k, 0]
        grasp[k] = world.grasp_point()
    return start, images, targets, visible, pixels, keypoint_visible, grasp


def render_split(config: DatasetConfig, split: str, count: int, progress: tqdm | None = None
                 ) -> Split:
    """Render ``count`` samples of ``split`` (``train`` or ``heldout``) in worker processes."""
    if split not in _SPLIT_IDS:
        raise ValueError(f"unknown split '{split}' (use {list(_SPLIT_IDS)})")
    jobs = [(config, split, s, min(_CHUNK, count - s)) for s in range(0, count, _CHUNK)]
    parts: dict[int, tuple] = {}
    if config.workers == 1:
        results = map(_render_chunk, jobs)
        pool = None
    else:
        pool = mp.get_context("spawn").Pool(config.workers)
        results = pool.imap_unordered(_render_chunk, jobs)
    try:
        for start, *arrays in results:
            parts[start] = arrays
            if progress is not None:
                progress.update(len(arrays[1]))
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    ordered = [parts[s] for s in sorted(parts)]
    return Split(*(np.concatenate([p[i] for p in ordered]) for i in range(len(_FIELDS))))


def build_dataset(config: DatasetConfig, cache_dir: Path | None = None
                  ) -> tuple[Split, Split]:
    """Render (or load from ``cache_dir``) the train and held-out splits, with a progress bar."""
    cache = cache_dir / f"encoder_dataset_{config.cache_key()}.npz" if cache_dir else None
    if cache is not None and cache.is_file():
        data = np.load(cache)
        return tuple(Split(*(data[f"{split}_{f}"] for f in _FIELDS))
                     for split in ("train", "heldout"))
    total = config.n_train + config.n_heldout
    with tqdm(total=total, desc="render dataset", unit="img", smoothing=0.1) as bar:
        train = render_split(config, "train", config.n_train, bar)
        heldout = render_split(config, "heldout", config.n_heldout, bar)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        arrays = {f"{name}_{f}": getattr(split, f) for name, split in
                  (("train", train), ("heldout", heldout)) for f in _FIELDS}
        np.savez(cache, **arrays)
    return train, heldout
