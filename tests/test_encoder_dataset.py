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
