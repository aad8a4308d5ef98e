"""Encoder dataset: seeded, split-independent renders with consistent labels."""

from __future__ import annotations

import numpy as np
import pybullet  # noqa: F401
import pytest

from visuomotor_models.dataset import DatasetConfig, render_split
from visuomotor_models.train_encoder import shift_images


@pytest.fixture(scope="module")
def small_split():
    return render_split(DatasetConfig(n_train=6, n_heldout=2, workers=1), "train", 6)


def test_same_seed_renders_identical_samples_whatever_the_chunking(small_split):
    again = render_split(DatasetConfig(n_train=6, n_heldout=2, workers=1), "train", 6)
    np.testing.assert_array_equal(again.images, small_split.images)
    np.testing.assert_array_equal(again.targets, small_split.targets)


def test_other_seed_or_split_gives_other_samples(small_split):
    other = render_split(DatasetConfig(n_train=6, n_heldout=2, workers=1, seed=1), "train", 6)
    held = render_split(DatasetConfig(n_train=6, n_heldout=2, workers=1), "heldout", 6)
    assert not np.allclose(other.targets, small_split.targets)
    assert not np.allclose(held.targets, small_split.targets)


def test_labels_are_in_the_workspace_and_the_sphere_is_red_where_projected(small_split):
    assert small_split.images.shape == (6, 128, 128, 3)
    assert np.all(small_split.targets[:, 2] > 0.05) and np.all(small_split.visible <= 1.0)
    for image, pixels, visible in zip(small_split.images, small_split.pixels,
                                      small_split.visible, strict=True):
        if visible < 1.0:
            continue
        u, v = np.round(pixels[0]).astype(int)
        r, g, b = image[v, u].astype(int)
        assert r > g + 40 and r > b + 40, (u, v, image[v, u])


def test_shift_augmentation_moves_content_by_the_reported_offset():
    rng = np.random.default_rng(0)
    images = np.zeros((3, 20, 20, 3), np.uint8)
    images[:, 10, 10] = 255
    shifted, offsets = shift_images(images, 3, rng)
    for img, (du, dv) in zip(shifted, offsets, strict=True):
        v, u = np.argwhere(img[:, :, 0] == 255)[0]
        assert (u, v) == (10 + du, 10 + dv)


def test_photometric_jitter_changes_colours_but_not_geometry():
    from visuomotor_models.train_encoder import photometric_jitter

    rng = np.random.default_rng(0)
    images = np.full((4, 16, 16, 3), 100, np.uint8)
    images[:, 8, 8] = (250, 10, 10)
    assert photometric_jitter(images, 0.0, rng) is images
    jittered = photometric_jitter(images, 1.0, rng)
    assert jittered.dtype == np.uint8 and jittered.shape == images.shape
    assert not np.array_equal(jittered, images)
    # the red pixel stays the reddest spot of each image
    redness = jittered[..., 0].astype(int) - jittered[..., 1:].mean(-1)
    assert all(np.unravel_index(np.argmax(r), r.shape) == (8, 8) for r in redness)


@pytest.fixture(scope="module")
def near_split():
    return render_split(DatasetConfig(n_train=6, n_heldout=2, workers=1,
                                      near_target_fraction=1.0), "train", 6)


def test_near_target_samples_put_the_grasp_point_within_the_radius(near_split, small_split):
    config = DatasetConfig()
    distance = near_split.hand_distance()
    assert np.all(distance <= config.near_target_radius + 0.01), distance
    # the arm-around-home samples keep their hand far from the target
    assert np.median(small_split.hand_distance()) > np.median(distance) + 0.1


def test_near_target_placement_keeps_each_sample_s_visuals_and_target(near_split):
    home_only = render_split(DatasetConfig(n_train=6, n_heldout=2, workers=1,
                                           near_target_fraction=0.0), "train", 6)
    np.testing.assert_array_equal(home_only.targets, near_split.targets)
    assert not np.allclose(home_only.grasp, near_split.grasp)


def test_place_grasp_point_respects_joint_limits_and_reaches_reachable_goals():
    from visuomotor_models.dataset import _world, place_grasp_point

    world = _world(DatasetConfig().arm_noise_std)
    target = world.reset(3)
    above = target + np.array([0.0, 0.0, 0.05])
    for goal in (target, above, target + np.array([0.3, 0.3, 0.6])):
        place_grasp_point(world, goal)
        q = world.true_joint_positions()
        assert np.all(q >= world.limits.lower - 1e-9) and np.all(q <= world.limits.upper + 1e-9)
    world.reset(3)
    place_grasp_point(world, above)
    assert np.linalg.norm(world.grasp_point() - above) < 0.01


def test_near_target_goals_stay_within_the_radius_and_above_the_table():
    from visuomotor_models.dataset import near_target_goal

    rng = np.random.default_rng(0)
    target, hand = np.array([0.5, 0.0, 0.04]), np.array([0.4, 0.1, 0.5])
    goals = np.array([near_target_goal(target, hand, 0.15, rng) for _ in range(500)])
    radius = np.linalg.norm(goals - target, axis=1)
    assert np.all(radius <= 0.15 + 1e-9) and np.all(goals[:, 2] >= 0.03)
    assert np.median(radius) < 0.06  # biased toward the target


def test_dataset_config_refuses_a_near_target_fraction_outside_0_1():
    with pytest.raises(ValueError, match="near_target_fraction"):
        DatasetConfig(near_target_fraction=1.5)


def test_error_breakdown_by_hand_distance_bins_each_sample_once():
    from visuomotor_core.estimate_metrics import error_by_hand_distance

    errors = np.array([0.01, 0.02, 0.03, 0.04])
    distance = np.array([0.01, 0.07, 0.2, 0.049])
    bins = error_by_hand_distance(errors, distance)
    assert list(bins) == ["lt_5cm", "5_15cm", "ge_15cm"]
    assert [b["count"] for b in bins.values()] == [2, 1, 1]
    assert bins["lt_5cm"]["median_m"] == pytest.approx(0.025)
