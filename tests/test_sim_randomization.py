"""Domain randomization: config validation, ranges, per-term seeding, normalization."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest

from visuomotor_sim.randomization import (
    DYNAMICS_VECTOR_DIM,
    DYNAMICS_VECTOR_FIELDS,
    DomainRandomizer,
    DynamicsParams,
    RandomizationProfile,
    VisualParams,
    default_config_path,
    load_profile,
    load_profiles,
)


def sample_many(profile: RandomizationProfile, n: int = 200, seed: int = 0):
    randomizer = DomainRandomizer(profile, np.random.default_rng(seed))
    return [randomizer.sample() for _ in range(n)]


def test_shipped_config_has_the_three_profiles():
    profiles = load_profiles(default_config_path())
    assert {"nominal", "training", "heldout"} <= set(profiles)


def test_nominal_profile_samples_nominal_values():
    dynamics, visual = sample_many(load_profile("nominal"), n=1)[0]
    assert dynamics == DynamicsParams() and visual == VisualParams()


@pytest.mark.parametrize("name", ["training", "training_with_force", "heldout"])
def test_every_term_stays_inside_its_range(name):
    profile = load_profile(name)
    samples = sample_many(profile)
    for term in profile.terms:
        values = np.array([{**asdict(d), **asdict(v)}[term.name] for d, v in samples])
        assert np.all(values >= term.low - 1e-12), term.name
        assert np.all(values <= term.high + 1e-12), term.name
        assert np.ptp(values, axis=0).max() > 0.0 or np.all(term.low == term.high), term.name


#: Randomized only in `training_with_force`, as a generic disturbance; nominal in held-out.
DISTURBANCES = {"external_force"}


def test_heldout_dynamics_ranges_lie_outside_training():
    training, heldout = load_profile("training"), load_profile("heldout")
    with_force = load_profile("training_with_force")
    for field in DYNAMICS_VECTOR_FIELDS:
        tr, ho = training.term(field), heldout.term(field)
        if field in DISTURBANCES:
            assert tr is None and ho is None and with_force.term(field) is not None, field
            continue
        assert tr is not None and ho is not None, field
        same = with_force.term(field)
        assert np.array_equal(same.low, tr.low) and np.array_equal(same.high, tr.high), field
        overlap = np.min(np.minimum(tr.high, ho.high) - np.maximum(tr.low, ho.low))
        assert overlap <= 1e-12, f"{field}: heldout overlaps training"


def test_same_seed_same_draws_and_terms_draw_independently():
    profile = load_profile("training")
    assert sample_many(profile, 5, seed=7) == sample_many(profile, 5, seed=7)
    assert sample_many(profile, 5, seed=7) != sample_many(profile, 5, seed=8)
    # dropping one term does not change what another term draws
    reduced = RandomizationProfile("reduced", tuple(t for t in profile.terms
                                                    if t.name != "payload_mass"))
    full = [d.link_mass_scale for d, _ in sample_many(profile, 5, seed=7)]
    part = [d.link_mass_scale for d, _ in sample_many(reduced, 5, seed=7)]
    assert full == part


def test_as_vector_has_documented_order_and_unit_scale():
    vec = DynamicsParams(payload_mass=1.25, external_force=(0.0, 25.0, -50.0)).as_vector()
    assert vec.dtype == np.float32 and vec.shape == (DYNAMICS_VECTOR_DIM,)
    assert DYNAMICS_VECTOR_DIM == len(DYNAMICS_VECTOR_FIELDS) + 2  # external_force has 3
    assert vec[DYNAMICS_VECTOR_FIELDS.index("payload_mass")] == pytest.approx(0.5)
    np.testing.assert_allclose(vec[-3:], [0.5, 0.75, 0.0])  # last field, (-50, 50) N span
    for dynamics, _ in sample_many(load_profile("training")):
        v = dynamics.as_vector()
        assert np.all(v >= -1e-6) and np.all(v <= 1.0 + 1e-6)


def test_unknown_term_is_refused_with_its_name():
    with pytest.raises(ValueError, match="unknown randomization term 'gravity_scale'"):
        RandomizationProfile.from_dict("p", {"gravity_scale": {"low": 0.9, "high": 1.1}})


def test_low_above_high_is_refused():
    with pytest.raises(ValueError, match=r"payload_mass.*low"):
        RandomizationProfile.from_dict("p", {"payload_mass": {"low": 2.0, "high": 1.0}})


def test_vector_term_needs_matching_shape():
    with pytest.raises(ValueError, match=r"light_colour.*shape"):
        RandomizationProfile.from_dict("p", {"light_colour": {"low": 0.5, "high": 1.0}})


def test_malformed_range_and_unknown_profile_are_refused(tmp_path):
    with pytest.raises(ValueError, match="expected \\{low"):
        RandomizationProfile.from_dict("p", {"payload_mass": [0.0, 1.0]})
    bad = tmp_path / "bad.yaml"
    bad.write_text("profiles:\n  x:\n    payload_mass: {low: 1, high: 0}\n")
    with pytest.raises(ValueError, match=r"bad\.yaml"):
        load_profiles(bad)
    with pytest.raises(ValueError, match="unknown randomization profile 'real'"):
        load_profile("real")


def test_params_reject_unphysical_values():
    with pytest.raises(ValueError, match="payload_mass"):
        DynamicsParams(payload_mass=-1.0)
    with pytest.raises(ValueError, match="object_colour"):
        VisualParams(object_colour=(1.5, 0.0, 0.0))
