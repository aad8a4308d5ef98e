"""Keypoint geometry (visuomotor_core.camera_geometry): the manifest's geometry record, pinhole
helpers, camera-pose refinement on landmarks and the target's position, against the sim's
camera model (visuomotor_sim.camera) as the independent reference."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from keypoint_model import (
    KEYPOINTS,
    TARGET,
    WORKSPACE,
    geometry_record,
    scene_keypoints,
    shifted_pose,
    sim_camera,
)

from visuomotor_core import camera_geometry as cg
from visuomotor_core.manifest import ModelContractError
from visuomotor_core.rotations import rotation_and_right_jacobian, rotvec_from_rotation
from visuomotor_models.bench_encoder import refine_pose_numeric
from visuomotor_sim.camera import CameraPose as SimPose
from visuomotor_sim.camera import rotation_from_rotvec

CAMERA = sim_camera()
K = CAMERA.intrinsics()
SPEC = cg.GeometrySpec.from_record(geometry_record())
#: A refinement without a calibration prior to speak of: exact on noise-free keypoints.
NO_PRIOR = cg.GeometryLimits(calibration_sigma_m=100.0, calibration_sigma_rad=100.0)
ALL_SEEN = np.ones(len(KEYPOINTS))
LANDMARK_ROWS = [KEYPOINTS.index(n) for n in KEYPOINTS if not n.startswith("target")]


def _error(estimate: cg.GeometryEstimate, target=TARGET) -> float:
    return float(np.linalg.norm(estimate.position - np.asarray(target)))


def _as_core(pose: SimPose) -> cg.CameraPose:
    return cg.CameraPose(pose.position, pose.rotation)


# ---------------------------------------------------------------- the record
def test_record_is_read_and_rows_are_found_by_name_in_any_order():
    order = ("robot_shoulder", "target_foot", "table_corner_right", "target_centre",
             "robot_base", "table_corner_left")
    spec = cg.GeometrySpec.from_record(geometry_record(keypoints=order))
    assert spec.keypoints == order and spec.keypoint_count == 6
    assert (spec.centre_row, spec.foot_row) == (3, 1)
    assert spec.landmark_rows.tolist() == [0, 2, 4, 5]
    np.testing.assert_allclose(spec.landmark_points[0], [0.0, 0.0, 0.333])
    np.testing.assert_allclose(spec.camera.k, K)
    np.testing.assert_allclose(spec.calibration.rotation, CAMERA.pose.rotation, atol=1e-12)
    np.testing.assert_allclose(spec.calibration.position, CAMERA.pose.position)
    assert spec.base_frame == "panda_link0" and spec.camera_frame_id == "camera_optical_frame"
    keypoints = scene_keypoints(shifted_pose(), keypoints=order)
    estimate = cg.estimate_target(spec, keypoints, np.ones(6), K, limits=NO_PRIOR)
    assert _error(estimate) < 1e-6


def _drop(*keys):
    def mutate(record):
        target = record
        for key in keys[:-1]:
            target = target[key]
        del target[keys[-1]]
    return mutate


def _set(*keys_and_value):
    *keys, value = keys_and_value

    def mutate(record):
        target = record
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value
    return mutate


RECORD_CASES = {
    "version 2": (_set("version", 2), "geometry version: manifest 2, runtime reads 1"),
    "no keypoints": (_drop("keypoints"), "geometry lacks 'keypoints'"),
    "no target foot": (_set("keypoints", ["target_centre", "table_corner_left",
                                          "table_corner_right", "robot_base",
                                          "robot_shoulder"]),
                       "lacks ['target_foot']"),
    "repeated name": (_set("keypoints", [*KEYPOINTS, "robot_base"]), "names repeat"),
    "keypoint without landmark": (_set("keypoints", [*KEYPOINTS, "gripper"]),
                                  "landmarks: no position for keypoints ['gripper']"),
    "landmark that is no keypoint": (_set("landmarks", "camera_mount", [1.0, 0.0, 0.5]),
                                     "landmarks: ['camera_mount'] are not keypoints"),
    "three landmarks": (lambda r: (r["keypoints"].remove("robot_shoulder"),
                                   r["landmarks"].pop("robot_shoulder")),
                        "needs at least 4"),
    "landmark with two numbers": (_set("landmarks", "robot_base", [0.0, 0.0]),
                                  "landmarks robot_base: expected 3 finite numbers"),
    "non-finite landmark": (_set("landmarks", "robot_base", [0.0, float("nan"), 0.0]),
                            "landmarks robot_base: expected 3 finite numbers"),
    "plane as text": (_set("target_support_plane_z", "0"), "target_support_plane_z"),
    "no plane": (_drop("target_support_plane_z"), "lacks 'target_support_plane_z'"),
    "empty workspace": (_set("target_workspace", "low", [0.7, -0.25, 0.1]),
                        "target_workspace: low"),
    "workspace without high": (_drop("target_workspace", "high"), "target_workspace"),
    "no camera": (_drop("camera"), "geometry lacks 'camera'"),
    "camera without k": (_drop("camera", "k"), "camera lacks 'k'"),
    "k not pinhole": (_set("camera", "k", [137.2, 0, 64, 0, 137.2, 63, 0, 0, 0]),
                      "is not a pinhole matrix"),
    "negative focal length": (_set("camera", "k", [-137.2, 0, 64, 0, 137.2, 63, 0, 0, 1]),
                              "is not a pinhole matrix"),
    "zero width": (_set("camera", "width", 0), "camera width: expected a positive integer"),
    "boolean height": (_set("camera", "height", True), "camera height"),
    "quaternion not unit": (_set("camera", "quaternion_xyzw", [0.0, 0.0, 0.0, 0.9]),
                            "has norm 0.9, expected a unit quaternion"),
    "quaternion of 3": (_set("camera", "quaternion_xyzw", [0.0, 0.0, 1.0]),
                        "camera quaternion_xyzw: expected 4 finite numbers"),
    "empty frame id": (_set("camera", "frame_id", ""), "camera frame_id"),
    "no base frame": (_drop("base_frame"), "geometry lacks 'base_frame'"),
    "not a mapping": (lambda r: r.clear() or r.update(oops=1), "lacks 'version'"),
}


@pytest.mark.parametrize("case", sorted(RECORD_CASES))
def test_malformed_record_is_refused_in_one_line_naming_the_field(case):
    mutate, expected = RECORD_CASES[case]
    record = copy.deepcopy(geometry_record())
    mutate(record)
    with pytest.raises(ModelContractError) as info:
        cg.GeometrySpec.from_record(record, "encoder.onnx")
    message = str(info.value)
    assert "\n" not in message and message.startswith("encoder.onnx: ")
    assert expected in message


def test_missing_or_non_mapping_record_is_refused():
    with pytest.raises(ModelContractError, match="lacks the 'geometry' record"):
        cg.GeometrySpec.from_record(None, "encoder.onnx")
    with pytest.raises(ModelContractError, match="expected a mapping, got list"):
        cg.GeometrySpec.from_record([], "encoder.onnx")


# ---------------------------------------------------------------- poses and pinhole helpers
rotvecs = st.lists(st.floats(-1.5, 1.5), min_size=3, max_size=3)


@settings(max_examples=60, deadline=None)
@given(rotvec=rotvecs, position=st.lists(st.floats(-2.0, 2.0), min_size=3, max_size=3))
@example(rotvec=[0.0, 0.0, 1e-5], position=[0.0, 0.0, 0.0])  # cv2.Rodrigues rounds it to 0
@example(rotvec=[3e-8, -1e-7, 0.0], position=[0.0, 0.0, 0.0])
def test_pose_round_trips_through_quaternion_and_opencv(rotvec, position):
    rotation = rotation_from_rotvec(rotvec)
    np.testing.assert_allclose(cg.rotvec_from_rotation(rotation), rotvec, atol=1e-9)
    pose = cg.CameraPose(np.array(position), rotation)
    again = cg.CameraPose.from_quaternion(position, pose.quaternion)
    np.testing.assert_allclose(again.rotation, rotation, atol=1e-9)
    back = cg.CameraPose.from_opencv(*pose.to_opencv())
    np.testing.assert_allclose(back.rotation, rotation, atol=1e-9)
    np.testing.assert_allclose(back.position, position, atol=1e-9)
    assert pose.offset_from(pose) == pytest.approx((0.0, 0.0), abs=1e-6)
    sim = SimPose(np.array(position), rotation)
    assert abs(float(np.dot(sim.quaternion, pose.quaternion))) == pytest.approx(1.0)


def test_pose_from_list_takes_seven_values_or_none_and_refuses_the_rest():
    assert cg.pose_from_list([]) is None
    pose = cg.pose_from_list([1.0, 0.0, 0.7, 0.0, 0.0, 0.0, 2.0])  # normalised
    np.testing.assert_allclose(pose.rotation, np.eye(3))
    for bad, match in (([1.0] * 5, "expected 7 values"),
                       ([1.0, 0.0, 0.7, 0.0, 0.0, 0.0, 0.1], "norm 0.1"),
                       ([1.0, float("inf"), 0.7, 0.0, 0.0, 0.0, 1.0], "finite")):
        with pytest.raises(ValueError, match=match):
            cg.pose_from_list(bad)


@settings(max_examples=60, deadline=None)
@given(size=st.integers(16, 1024), point=st.tuples(st.floats(0.3, 0.7), st.floats(-0.3, 0.3),
                                                    st.floats(0.0, 0.4)))
def test_scaled_keypoints_are_where_a_resized_camera_sees_the_point(size, point):
    from visuomotor_sim.camera import CameraConfig, PinholeCamera

    big = PinholeCamera(CameraConfig(width=size, height=size), pixel_convention="opengl")
    small = PinholeCamera(CameraConfig(), pixel_convention="opengl")
    seen_small = small.project(np.array([point]))
    np.testing.assert_allclose(cg.scale_pixels(seen_small, (128, 128), (size, size)),
                               big.project(np.array([point])), atol=1e-6)
    np.testing.assert_allclose(cg.scale_intrinsics(small.intrinsics(), (128, 128),
                                                   (size, size)), big.intrinsics(), atol=1e-9)
    np.testing.assert_allclose(cg.project(np.array([point]), _as_core(small.pose), K),
                               CAMERA.project(np.array([point])), atol=1e-9)


def test_pixel_ray_passes_through_the_point_seen_there():
    point = np.array([0.45, -0.12, 0.27])
    pixel = CAMERA.project(point[None])
    origin, direction = cg.pixel_rays(pixel, _as_core(CAMERA.pose), np.linalg.inv(K))
    along = point - origin
    np.testing.assert_allclose(direction[0], along / np.linalg.norm(along), atol=1e-9)


# ---------------------------------------------------------------- the target
def test_target_is_exact_with_the_true_pose_as_calibration():
    true = shifted_pose()
    estimate = cg.estimate_target(SPEC, scene_keypoints(true), ALL_SEEN, K, _as_core(true))
    assert _error(estimate) < 1e-6 and estimate.confidence == 1.0 and estimate.pose_refined


def test_calibration_two_cm_off_is_recovered_by_the_landmarks_and_not_without_them():
    keypoints = scene_keypoints(shifted_pose()).astype(np.float32)  # as the network gives
    refined = cg.estimate_target(SPEC, keypoints, ALL_SEEN, K, limits=NO_PRIOR)
    assert refined.pose_refined and refined.pose_status == cg.POSE_REFINED
    assert _error(refined) < 0.002 and refined.reprojection_rms_px < 0.01
    moved, turned = refined.pose.offset_from(_as_core(shifted_pose()))
    assert moved < 1e-3 and turned < 1e-3
    # The default prior holds weakly observed directions near the calibration: a bias of
    # millimetres on perfect keypoints, the price of robustness to noisy ones.
    with_prior = cg.estimate_target(SPEC, keypoints, ALL_SEEN, K)
    assert with_prior.pose_refined and _error(with_prior) < 0.005
    blind = ALL_SEEN.copy()
    blind[LANDMARK_ROWS[0]] = 0.3  # three landmarks left: fewer than min_landmarks (4)
    calibrated = cg.estimate_target(SPEC, keypoints, blind, K)
    assert not calibrated.pose_refined and calibrated.pose_status == cg.POSE_TOO_FEW_LANDMARKS
    assert _error(calibrated) > 0.01  # what the refinement is for
    # Allowed down to two landmarks, the calibration prior still recovers most of the
    # displacement from them.
    two = ALL_SEEN.copy()
    two[LANDMARK_ROWS[:2]] = 0.3
    partial = cg.estimate_target(SPEC, keypoints, two, K, limits=cg.GeometryLimits(
        min_landmarks=cg.MIN_REFINE_LANDMARKS))
    assert partial.pose_refined and _error(partial) < 0.5 * _error(calibrated)


@settings(max_examples=80, deadline=None)
@given(shift=st.tuples(*[st.floats(-1.0, 1.0)] * 3), turn=st.tuples(*[st.floats(-1.0, 1.0)] * 3),
       shift_m=st.floats(0.0, 0.02), turn_rad=st.floats(0.0, 0.02),
       target=st.tuples(*[st.floats(0.0, 1.0)] * 3))
def test_any_camera_within_two_cm_and_0_02_rad_of_its_calibration_is_recovered(
        shift, turn, shift_m, turn_rad, target):
    def scaled(v, length):
        v = np.asarray(v)
        norm = np.linalg.norm(v)
        return v * (length / norm) if norm > 1e-6 else np.zeros(3)

    low, high = np.array(WORKSPACE["low"]), np.array(WORKSPACE["high"])
    target = low + np.asarray(target) * (high - low)
    true = CAMERA.pose.perturbed(scaled(shift, shift_m), scaled(turn, turn_rad))
    keypoints = scene_keypoints(true, target).astype(np.float32)
    estimate = cg.estimate_target(SPEC, keypoints, ALL_SEEN, K, limits=NO_PRIOR)
    assert estimate.pose_refined and _error(estimate, target) < 0.002
    assert estimate.confidence == 1.0
    # With the default calibration prior: a bias of millimetres (under 9 mm in 4000 random
    # draws of this range, against centimetres for the calibrated pose), at most a few
    # millimetres more than the calibrated pose where the displacement happens to cancel
    # at the target (in weakly observed directions the prior holds the calibration).
    blind = ALL_SEEN.copy()
    blind[LANDMARK_ROWS] = 0.0
    calibrated = _error(cg.estimate_target(SPEC, keypoints, blind, K), target)
    with_prior = _error(cg.estimate_target(SPEC, keypoints, ALL_SEEN, K), target)
    assert with_prior < 0.012 and with_prior <= calibrated + 0.006


def test_the_calibration_prior_lowers_the_error_from_noisy_landmarks():
    rng = np.random.default_rng(5)
    errors: dict[str, list[float]] = {"prior": [], "none": []}
    for _ in range(80):
        target = rng.uniform(WORKSPACE["low"], WORKSPACE["high"])
        noisy = scene_keypoints(shifted_pose(), target)
        noisy[LANDMARK_ROWS] += rng.normal(0.0, 0.3, (len(LANDMARK_ROWS), 2))
        errors["prior"].append(_error(cg.estimate_target(SPEC, noisy, ALL_SEEN, K), target))
        errors["none"].append(_error(cg.estimate_target(SPEC, noisy, ALL_SEEN, K,
                                                        limits=NO_PRIOR), target))
    assert np.median(errors["prior"]) < 0.8 * np.median(errors["none"])


def test_with_noisy_keypoints_the_refined_pose_still_beats_the_calibration():
    rng = np.random.default_rng(3)
    errors: dict[bool, list[float]] = {True: [], False: []}
    blind = np.ones(len(KEYPOINTS))
    blind[LANDMARK_ROWS] = 0.0
    for _ in range(60):
        target = rng.uniform(WORKSPACE["low"], WORKSPACE["high"])
        noisy = scene_keypoints(shifted_pose(), target) + rng.normal(0.0, 0.15, (6, 2))
        for refine, visibility in ((True, ALL_SEEN), (False, blind)):
            errors[refine].append(_error(cg.estimate_target(SPEC, noisy, visibility, K),
                                         target))
    assert np.median(errors[True]) < 0.5 * np.median(errors[False])


# ---------------------------------------------------------------- refusing a refinement
def test_a_pose_far_from_the_calibration_is_refused():
    for far in (CAMERA.pose.perturbed([0.1, 0.0, 0.0], [0.0, 0.0, 0.0]),
                CAMERA.pose.perturbed([0.0, 0.0, 0.0], [0.0, 0.15, 0.0])):
        estimate = cg.estimate_target(SPEC, scene_keypoints(far), ALL_SEEN, K)
        assert not estimate.pose_refined and estimate.pose_status == cg.POSE_MOVED_TOO_FAR
        np.testing.assert_allclose(estimate.pose.position, CAMERA.pose.position)


def test_landmarks_that_do_not_fit_one_pose_are_refused():
    keypoints = scene_keypoints(shifted_pose())
    keypoints[LANDMARK_ROWS[2], 0] += 20.0  # a wrong landmark
    loose = cg.GeometryLimits(max_translation_m=10.0, max_rotation_rad=3.0)
    estimate = cg.estimate_target(SPEC, keypoints, ALL_SEEN, K, limits=loose)
    assert estimate.pose_status == cg.POSE_REPROJECTION and not estimate.pose_refined
    assert estimate.reprojection_rms_px > 2.0
    keypoints = scene_keypoints(shifted_pose())
    keypoints[LANDMARK_ROWS[2], 0] += 2.0
    strict = cg.GeometryLimits(max_reprojection_rms_px=0.5)
    assert cg.estimate_target(SPEC, keypoints, ALL_SEEN, K).pose_refined
    assert cg.estimate_target(SPEC, keypoints, ALL_SEEN, K, limits=strict).pose_status == \
        cg.POSE_REPROJECTION


# ---------------------------------------------------------------- the analytic Jacobian
@settings(max_examples=60, deadline=None)
@given(rotvec=st.tuples(*[st.floats(-2.0, 2.0)] * 3), scale=st.sampled_from(
    [1e-12, 1e-6, 0.999e-3, 1.001e-3, 0.05, 1.0]))
@example(rotvec=(0.0, 0.0, 0.0), scale=1.0)
def test_rotation_and_right_jacobian_match_rodrigues_and_its_derivative(rotvec, scale):
    w = np.asarray(rotvec) * scale
    rotation, jacobian = rotation_and_right_jacobian(w)
    # (rotation_from_rotvec returns the identity below 1e-12 rad.)
    np.testing.assert_allclose(rotation, rotation_from_rotvec(w), rtol=0.0, atol=1e-12)
    # Exp(w)^T Exp(w + h e_i) = Exp(h J e_i) + O(h^2); central differences cancel the h^2.
    h = 1e-6
    for i, step in enumerate(np.eye(3) * h):
        turn = (rotation_from_rotvec(w - step).T @ rotation_from_rotvec(w + step)) / (2 * h)
        column = (turn - turn.T)[[2, 0, 1], [1, 2, 0]] / 2
        np.testing.assert_allclose(column, jacobian[:, i], rtol=0.0, atol=1e-8)


def _pose_difference(a: cg.CameraPose, b: cg.CameraPose) -> tuple[float, float]:
    """(m, rad) between two poses; the angle from the rotation vector, exact near zero."""
    return (float(np.linalg.norm(a.position - b.position)),
            float(np.linalg.norm(rotvec_from_rotation(a.rotation.T @ b.rotation))))


def test_the_analytic_refinement_equals_the_finite_difference_one_on_random_cases():
    """The Gauss-Newton with the analytic Jacobian reaches the pose that the one with a
    finite-difference Jacobian (the refinement it replaced) reaches, with the same outcome,
    on cameras up to 6 cm and 0.12 rad off, 0-2 px of keypoint noise, 2-4 landmarks, with
    and without the prior."""
    rng = np.random.default_rng(11)
    landmarks = SPEC.landmark_points
    calibration = SPEC.calibration
    k_inv = np.linalg.inv(K)
    statuses = set()
    for case in range(400):
        limits = [cg.GeometryLimits(min_landmarks=2), cg.GeometryLimits(),
                  cg.GeometryLimits(min_landmarks=2, calibration_sigma_m=100.0,
                                    calibration_sigma_rad=100.0)][case % 3]
        off = rng.uniform(0.0, 1.0) ** 2
        true = cg.CameraPose(calibration.position + rng.uniform(-0.06, 0.06, 3) * off,
                             calibration.rotation @ rotation_from_rotvec(
                                 rng.uniform(-0.12, 0.12, 3) * off))
        seen = np.sort(rng.choice(len(landmarks), rng.integers(2, len(landmarks) + 1),
                                  replace=False))
        noise = rng.choice([0.0, 0.3, 2.0])
        pixels = cg.project(landmarks[seen], true, K) + rng.normal(0.0, noise, (len(seen), 2))
        new = cg.refine_pose(landmarks[seen], pixels, K, calibration, limits)
        old = refine_pose_numeric(landmarks[seen], pixels, K, calibration, limits)
        statuses.add(new.status)
        assert (new.status, new.refined) == (old.status, old.refined)
        moved, turned = _pose_difference(new.pose, old.pose)
        assert moved < 1e-6 and turned < 1e-6, (case, moved, turned)
        assert new.rms_px == pytest.approx(old.rms_px, abs=1e-6, nan_ok=True)
        target = rng.uniform(WORKSPACE["low"], WORKSPACE["high"])
        centre, foot = cg.project(np.array([target, [*target[:2], 0.0]]), true, K)
        at_new, _ = cg.target_from_keypoints(centre, foot, new.pose, k_inv, 0.0)
        at_old, _ = cg.target_from_keypoints(centre, foot, old.pose, k_inv, 0.0)
        assert np.linalg.norm(at_new - at_old) < 1e-6
    assert statuses == {cg.POSE_REFINED, cg.POSE_TOO_FEW_LANDMARKS, cg.POSE_MOVED_TOO_FAR,
                        cg.POSE_REPROJECTION}


def test_a_refinement_with_a_landmark_behind_the_camera_fails_and_keeps_the_calibration():
    pixels = scene_keypoints(shifted_pose())[LANDMARK_ROWS]
    landmarks = SPEC.landmark_points.copy()
    landmarks[0] = SPEC.calibration.position  # at the optical centre: no pixel
    result = cg.refine_pose(landmarks, pixels, K, SPEC.calibration, cg.GeometryLimits())
    assert not result.refined and result.status == cg.POSE_FAILED
    assert result.pose is SPEC.calibration


# ---------------------------------------------------------------- confidence
@pytest.mark.parametrize(("centre", "foot"), [(0.9, 0.7), (0.6, 1.0)])
def test_confidence_is_the_less_visible_target_keypoint(centre, foot):
    visibility = ALL_SEEN.copy()
    visibility[SPEC.centre_row], visibility[SPEC.foot_row] = centre, foot
    estimate = cg.estimate_target(SPEC, scene_keypoints(shifted_pose()), visibility, K)
    assert estimate.confidence == pytest.approx(min(centre, foot))


@pytest.mark.parametrize("row", LANDMARK_ROWS)
def test_confidence_drops_to_0_3_times_when_too_few_landmarks_are_seen(row):
    visibility = ALL_SEEN.copy()
    visibility[SPEC.centre_row] = 0.8
    visibility[LANDMARK_ROWS] = 0.49  # all but one hidden
    visibility[row] = 1.0
    estimate = cg.estimate_target(SPEC, scene_keypoints(shifted_pose()), visibility, K)
    assert not estimate.pose_refined
    assert estimate.confidence == pytest.approx(0.8 * 0.3)


@pytest.mark.parametrize(("target", "inside"), [
    ((0.68, 0.0, 0.2), True),     # within the 5 cm margin
    ((0.75, 0.0, 0.2), False),    # beyond it
    ((0.5, -0.32, 0.2), False),
    ((0.5, 0.1, 0.43), False),
])
def test_a_target_outside_the_workspace_gets_confidence_zero(target, inside):
    estimate = cg.estimate_target(SPEC, scene_keypoints(shifted_pose(), target), ALL_SEEN, K,
                                  limits=NO_PRIOR)
    assert _error(estimate, target) < 0.002  # still located, just not trusted
    assert (estimate.confidence > 0.0) is inside


def test_a_foot_above_the_horizon_gives_confidence_zero_and_no_exception():
    keypoints = scene_keypoints(shifted_pose())
    keypoints[SPEC.foot_row] = (64.0, -400.0)  # the ray points up: it never meets the table
    estimate = cg.estimate_target(SPEC, keypoints, ALL_SEEN, K)
    assert estimate.confidence == 0.0
    keypoints[SPEC.centre_row] = (np.nan, np.nan)
    estimate = cg.estimate_target(SPEC, keypoints, np.full(6, np.nan), K)
    assert estimate.confidence == 0.0 and not estimate.pose_refined


def test_a_ray_meeting_the_table_behind_the_camera_is_not_trusted_even_inside_the_workspace():
    record = geometry_record()
    record["target_workspace"] = {"low": [-10.0, -10.0, -10.0], "high": [10.0, 10.0, 10.0]}
    spec = cg.GeometrySpec.from_record(record)
    keypoints = scene_keypoints(shifted_pose())
    keypoints[spec.foot_row] = (64.0, -400.0)
    position, ok = cg.target_from_keypoints(keypoints[spec.centre_row], keypoints[spec.foot_row],
                                            _as_core(CAMERA.pose), np.linalg.inv(K), 0.0)
    assert not ok and position[0] > CAMERA.pose.position[0]  # behind the camera
    assert cg.estimate_target(spec, keypoints, ALL_SEEN, K).confidence == 0.0
    assert cg.estimate_target(spec, scene_keypoints(shifted_pose()), ALL_SEEN,
                              K).confidence == 1.0


def test_limits_are_validated():
    for bad in ({"min_landmarks": 1}, {"min_visibility": 1.5}, {"max_translation_m": 0.0},
                {"unrefined_confidence_scale": 2.0}, {"workspace_margin_m": -0.1}):
        with pytest.raises(ValueError):
            cg.GeometryLimits(**bad)
