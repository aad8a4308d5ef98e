"""Fail-closed model loading: the manifest's contract against the ONNX graph and the runtime.

Each tampered manifest is a copy in ``tmp_path``, re-sealed (``record_sha256``) so that the
check under test, not the record's integrity check, is what refuses it; the integrity check
has its own tests. Real ONNX Runtime sessions throughout, no torch at load time.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from keypoint_model import geometry_record, scene_keypoints, shifted_pose, sim_camera, write_encoder

from visuomotor_core.encoder_runtime import EncoderRuntime
from visuomotor_core.manifest import (
    RECORD_HASH_KEY,
    ManifestError,
    ModelContractError,
    load_model_spec,
    record_digest,
    robot_name,
    seal_entry,
)
from visuomotor_core.policy_runtime import load_policy_runtime
from visuomotor_core.robot_model import RobotModel

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "models" / "artifacts"
URDF = ROOT / "ros2_ws" / "src" / "visuomotor_description" / "urdf" / "panda.urdf"
SIZE = 32


@pytest.fixture(scope="module")
def small_encoder(tmp_path_factory):
    """A 32-px keypoint encoder (constant keypoints, tests/keypoint_model.py) with its
    sealed manifest entry."""
    camera = sim_camera(SIZE)
    return write_encoder(tmp_path_factory.mktemp("contract_encoder"),
                         scene_keypoints(shifted_pose(camera), camera=camera), size=SIZE)


@pytest.fixture(scope="module")
def robot() -> RobotModel:
    return RobotModel.from_urdf_file(str(URDF))


def tampered_copy(tmp_path: Path, manifest: Path, name: str, mutate, reseal: bool = True
                  ) -> Path:
    """Copy ``manifest`` and the ONNX file of entry ``name`` into ``tmp_path``, apply
    ``mutate(entry)`` and write the copy (re-sealed unless ``reseal`` is False)."""
    data = json.loads(manifest.read_text())
    entry = data["models"][name]
    shutil.copy(manifest.parent / entry["file"], tmp_path / entry["file"])
    mutate(entry)
    data["models"][name] = seal_entry(entry) if reseal else entry
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(data, indent=2))
    return path


def _set(*keys_and_value):
    """A mutation setting ``entry[k1][k2]... = value``."""
    *keys, value = keys_and_value

    def mutate(entry):
        target = entry
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = copy.deepcopy(value)

    return mutate


def _refusal(call) -> str:
    with pytest.raises(ModelContractError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------- committed artifacts
def test_committed_entries_are_sealed_and_match_their_graphs(robot):
    EncoderRuntime(ARTIFACTS / "manifest.json", robot="panda")
    for name in ("policy", "policy_no_history"):
        load_policy_runtime(ARTIFACTS / "manifest.json", name, robot, robot="panda",
                            camera_rate_hz=20.0, control_rate_hz=1000.0)
    assert robot_name(URDF) == "panda"


# ---------------------------------------------------------------- encoder contract
ENCODER_CASES = {
    "input size 64 px": (_set("inputs", 0, "shape", ["batch", 3, 64, 64]),
                         "encoder.onnx: input 'image' shape: manifest ['batch', 3, 64, 64], "
                         "model ['batch', 3, 32, 32]"),
    "fixed batch where the graph's is symbolic": (
        _set("inputs", 0, "shape", [1, 3, SIZE, SIZE]),
        "input 'image' shape: manifest [1, 3, 32, 32], model ['batch', 3, 32, 32]"),
    "4-channel input": (_set("inputs", 0, "shape", ["batch", 4, SIZE, SIZE]),
                        "input 'image' shape: manifest ['batch', 4, 32, 32]"),
    "4-channel preprocessing": (_set("preprocessing", "channels", 4),
                                "preprocessing channels: manifest 4, model 3"),
    "preprocessing width": (_set("preprocessing", "width", 64),
                            "preprocessing width: manifest 64, model 32"),
    "preprocessing height": (_set("preprocessing", "height", 16),
                             "preprocessing height: manifest 16, model 32"),
    "colour order": (_set("preprocessing", "colour_order", "yuv"),
                     "preprocessing colour_order: manifest 'yuv', runtime supports "
                     "['rgb', 'bgr']"),
    "layout": (_set("preprocessing", "layout", "NHWC"),
               "preprocessing layout: manifest 'NHWC', runtime writes 'NCHW'"),
    "preprocessing dtype": (_set("preprocessing", "dtype", "uint8"),
                            "preprocessing dtype: manifest 'uint8', model 'float32'"),
    "input dtype": (_set("inputs", 0, "dtype", "float16"),
                    "input 'image' dtype: manifest 'float16', model 'float32'"),
    "embedding size": (_set("outputs", 0, "shape", ["batch", 8]),
                       "output 'embedding' shape: manifest ['batch', 8], model ['batch', 16]"),
    "output order": (lambda e: e["outputs"].reverse(),
                     "outputs: manifest ['visibility', 'keypoints', 'embedding'], "
                     "model ['embedding', 'keypoints', 'visibility']"),
    "old outputs": (_set("outputs", slice(1, None), [
        {"name": "target_position", "shape": ["batch", 3], "dtype": "float32"},
        {"name": "confidence", "shape": ["batch", 1], "dtype": "float32"}]),
                    "outputs: manifest ['embedding', 'target_position', 'confidence'], "
                    "runtime needs ['embedding', 'keypoints', 'visibility']"),
    "keypoint count": (_set("outputs", 1, "shape", ["batch", 5, 2]),
                       "output 'keypoints' shape: manifest ['batch', 5, 2], "
                       "model ['batch', 6, 2]"),
    "geometry names more keypoints than the graph has": (
        lambda e: (e["geometry"]["keypoints"].append("table_corner_far"),
                   e["geometry"]["landmarks"].__setitem__("table_corner_far",
                                                          [0.9, 0.6, 0.0])),
        "output 'keypoints' shape: model ['batch', 6, 2], runtime needs (geometry "
        "keypoints: 7) ['batch', 7, 2]"),
    "no geometry": (lambda e: e.pop("geometry"),
                    "encoder.onnx: manifest entry lacks the 'geometry' record"),
    "geometry camera at another size": (
        _set("geometry", "camera", "width", 64),
        "geometry camera size: manifest [64, 32], preprocessing [32, 32]"),
    "geometry without target foot": (
        lambda e: e["geometry"]["keypoints"].remove("target_foot"),
        "encoder.onnx: geometry keypoints:"),
    "geometry quaternion not unit": (
        _set("geometry", "camera", "quaternion_xyzw", [0.0, 0.0, 0.0, 0.5]),
        "encoder.onnx: geometry camera quaternion_xyzw: [0.0, 0.0, 0.0, 0.5] has norm 0.5"),
    "geometry version": (_set("geometry", "version", 2),
                         "encoder.onnx: geometry version: manifest 2, runtime reads 1"),
    "renamed input": (_set("inputs", 0, "name", "img"),
                      "inputs: manifest ['img'], runtime needs ['image']"),
    "missing preprocessing field": (lambda e: e["preprocessing"].pop("channels"),
                                    "preprocessing lacks ['channels']"),
}


@pytest.mark.parametrize("case", sorted(ENCODER_CASES))
def test_encoder_manifest_that_disagrees_with_the_graph_is_refused(case, small_encoder,
                                                                   tmp_path, monkeypatch):
    mutate, expected = ENCODER_CASES[case]
    _, manifest = small_encoder
    path = tampered_copy(tmp_path, manifest, "encoder", mutate)
    assert expected in _refusal(lambda: EncoderRuntime(path))


def test_encoder_with_geometry_in_another_base_frame_is_refused(small_encoder, tmp_path,
                                                                monkeypatch):
    _, manifest = small_encoder
    path = tampered_copy(tmp_path, manifest, "encoder", _set("geometry", "base_frame", "world"))
    created = []
    monkeypatch.setattr("visuomotor_core.encoder_runtime.create_session",
                        lambda *a, **k: created.append(a))
    message = _refusal(lambda: EncoderRuntime(path, base_frame="panda_link0"))
    assert message == "encoder.onnx: geometry base_frame: manifest 'world', runtime 'panda_link0'"
    assert created == []


def test_a_sealed_geometry_record_from_the_test_scene_loads(small_encoder):
    _, manifest = small_encoder
    runtime = EncoderRuntime(manifest, robot="panda", base_frame="panda_link0")
    assert runtime.geometry.keypoints == tuple(geometry_record()["keypoints"])


def test_encoder_for_another_robot_is_refused_before_a_session_exists(small_encoder, tmp_path,
                                                                      monkeypatch):
    _, manifest = small_encoder
    path = tampered_copy(tmp_path, manifest, "encoder", _set("robot", "kuka_iiwa"))
    created = []
    monkeypatch.setattr("visuomotor_core.encoder_runtime.create_session",
                        lambda *a, **k: created.append(a))
    message = _refusal(lambda: EncoderRuntime(path, robot="panda"))
    assert message == "encoder.onnx: robot: manifest 'kuka_iiwa', runtime 'panda'"
    assert created == []


# ---------------------------------------------------------------- policy contract
POLICY_CASES = {
    "history length 5 in the record": (
        _set("policy", "history_length", 5),
        "policy.onnx: policy history_length: manifest 5, model 10"),
    "history length 5 in the input": (
        _set("inputs", 1, "shape", ["batch", 5, 28]),
        "policy.onnx: input 'history' shape: manifest ['batch', 5, 28], "
        "model ['batch', 10, 28]"),
    "memoryless record on a history model": (
        _set("policy", "uses_history", False),
        "policy uses_history: manifest False, model has a 'history' input: True"),
    "observation size": (_set("inputs", 0, "shape", ["batch", 24]),
                         "input 'observation' shape: manifest ['batch', 24], "
                         "model ['batch', 23]"),
    "latent size": (_set("policy", "latent_dim", 4),
                    "'dynamics_latent' axis 1 size: model 8, manifest latent_dim 4"),
    "history dtype": (_set("inputs", 1, "dtype", "float64"),
                      "input 'history' dtype: manifest 'float64', model 'float32'"),
    "missing output": (lambda e: e["outputs"].pop(1),
                       "outputs: manifest ['action'], model ['action', 'dynamics_latent']"),
}


@pytest.mark.parametrize("case", sorted(POLICY_CASES))
def test_policy_manifest_that_disagrees_with_the_graph_is_refused(case, robot, tmp_path):
    mutate, expected = POLICY_CASES[case]
    path = tampered_copy(tmp_path, ARTIFACTS / "manifest.json", "policy", mutate)
    assert expected in _refusal(lambda: load_policy_runtime(path, "policy", robot))


@pytest.mark.parametrize(("given", "expected"), [
    ({"robot": "fr3"}, "policy.onnx: robot: manifest 'panda', URDF fr3.urdf 'fr3'"),
    ({"camera_rate_hz": 30.0}, "policy.onnx: camera rate policy_rate_hz (Hz): manifest "
                               "20.0, parameter policy_rate_hz 30.0"),
    ({"control_rate_hz": 500.0}, "policy.onnx: controller rate control_rate_hz (Hz): "
                                 "manifest 1000.0, controller.yaml rate_hz 500.0"),
])
def test_policy_for_another_robot_or_rate_is_refused(given, expected, robot):
    sources = {"robot": "URDF fr3.urdf", "camera_rate_hz": "parameter policy_rate_hz",
               "control_rate_hz": "controller.yaml rate_hz"}
    message = _refusal(lambda: load_policy_runtime(
        ARTIFACTS / "manifest.json", "policy", robot, sources=sources, **given))
    assert message == expected


def test_policy_rates_within_a_rounding_error_are_accepted(robot):
    load_policy_runtime(ARTIFACTS / "manifest.json", "policy", robot,
                        camera_rate_hz=20.0 + 1e-9, control_rate_hz=1000.0000001)


def test_policy_record_without_rates_is_refused(robot, tmp_path):
    path = tampered_copy(tmp_path, ARTIFACTS / "manifest.json", "policy",
                         lambda e: e["policy"].pop("control_rate_hz"))
    with pytest.raises(ManifestError, match="control_rate_hz"):
        load_policy_runtime(path, "policy", robot)


def test_unloadable_onnx_file_is_one_manifest_error(small_encoder, tmp_path):
    from visuomotor_core.manifest import sha256_file

    _, manifest = small_encoder
    garbage = tmp_path / "encoder.onnx"

    def point_at_garbage(entry):
        garbage.write_bytes(b"not an onnx graph\n" * 10)
        entry["sha256"] = sha256_file(garbage)

    path = tampered_copy(tmp_path, manifest, "encoder", point_at_garbage)
    with pytest.raises(ManifestError, match=r"encoder\.onnx: ONNX Runtime cannot load") as info:
        EncoderRuntime(path)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------- record integrity
@pytest.mark.parametrize("mutate", [
    _set("policy", "history_length", 5),
    _set("policy", "sag_estimator", "kp", [1.0] * 7),
    _set("metrics", "heldout", "success_rate", 1.0),
    _set("robot", "fr3"),
], ids=["history_length", "sag gains", "metrics", "robot"])
def test_entry_edited_after_it_was_written_is_refused(mutate, robot, tmp_path):
    path = tampered_copy(tmp_path, ARTIFACTS / "manifest.json", "policy", mutate,
                         reseal=False)
    with pytest.raises(ManifestError, match="record_sha256 mismatch") as info:
        load_policy_runtime(path, "policy", robot)
    assert "\n" not in str(info.value) and not isinstance(info.value, ModelContractError)


def test_entry_without_seal_or_robot_is_refused(tmp_path):
    for key in (RECORD_HASH_KEY, "robot"):
        path = tampered_copy(tmp_path, ARTIFACTS / "manifest.json", "policy",
                             lambda e, k=key: e.pop(k), reseal=False)
        with pytest.raises(ManifestError, match=f"lacks '{key}'"):
            load_model_spec(path, "policy")


def test_writer_seals_entries_and_rewritten_metrics_still_load(small_encoder, tmp_path):
    from visuomotor_models.export import write_manifest_entry

    onnx_path, manifest = small_encoder
    copy_dir = tmp_path / "run"
    copy_dir.mkdir()
    shutil.copy(onnx_path, copy_dir / onnx_path.name)
    shutil.copy(manifest, copy_dir / "manifest.json")
    entry = json.loads((copy_dir / "manifest.json").read_text())["models"]["encoder"]
    entry["metrics"] = {"heldout": {"median_m": 0.01}}  # as an evaluation script does
    write_manifest_entry(copy_dir / "manifest.json", "encoder", entry)
    spec = EncoderRuntime(copy_dir / "manifest.json").spec
    assert spec.entry["metrics"]["heldout"]["median_m"] == 0.01
    assert spec.entry[RECORD_HASH_KEY] == record_digest(spec.entry)


_json_leaf = (st.none() | st.booleans() | st.integers(-2**53, 2**53)
              | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8))
_json = st.recursive(_json_leaf, lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=20)


@settings(max_examples=150, deadline=None)
@given(entry=st.dictionaries(st.text(max_size=8), _json, min_size=1, max_size=6),
       data=st.data())
def test_seal_survives_the_json_round_trip_and_catches_any_changed_value(entry, data):
    sealed = seal_entry(entry)
    reloaded = json.loads(json.dumps(sealed, indent=2))
    assert record_digest(reloaded) == reloaded[RECORD_HASH_KEY]
    key = data.draw(st.sampled_from(sorted(k for k in entry if k != RECORD_HASH_KEY)))
    changed = data.draw(_json.filter(lambda v: json.dumps(v) != json.dumps(entry[key])))
    reloaded[key] = changed
    assert record_digest(reloaded) != sealed[RECORD_HASH_KEY]
