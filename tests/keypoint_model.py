"""Keypoint encoders for tests, built without torch.

:func:`write_encoder` writes an ONNX graph with the encoder's contract (input ``image``
[batch, 3, S, S]; outputs ``embedding`` [batch, D], ``keypoints`` [batch, K, 2],
``visibility`` [batch, K]) whose keypoints and visibilities are constants broadcast to the
batch (the input's mean times 0 plus the constant, so every output's shape follows the
input's), and a sealed manifest entry with a ``geometry`` record, as the exporter writes
them. Real ONNX Runtime runs it.

The scene is the simulation's: its camera (:mod:`visuomotor_sim.camera`), landmarks on the
table and the robot, a target on its post. :func:`scene_keypoints` projects them from a
chosen (true) camera pose, so the geometry has exact keypoints to recover the target from.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from visuomotor_core.image import PreprocessConfig
from visuomotor_core.manifest import seal_entry, sha256_file
from visuomotor_sim.camera import CameraConfig, CameraPose, PinholeCamera

SIZE = 128
EMBEDDING_DIM = 16
LANDMARKS = {
    "table_corner_left": (-0.3, 0.6, 0.0),
    "table_corner_right": (-0.3, -0.6, 0.0),
    "robot_base": (0.0, 0.0, 0.0),
    "robot_shoulder": (0.0, 0.0, 0.333),
}
KEYPOINTS = ("target_centre", "target_foot", *LANDMARKS)
WORKSPACE = {"low": [0.35, -0.25, 0.10], "high": [0.65, 0.25, 0.35]}
TARGET = np.array([0.5, 0.1, 0.2])
#: The rendering camera's offset from its calibration: 2 cm, about 0.02 rad.
CAMERA_SHIFT = (0.012, -0.01, 0.012)
CAMERA_TURN = (0.012, -0.012, 0.008)


def sim_camera(size: int = SIZE) -> PinholeCamera:
    """The simulation's camera at ``size`` x ``size`` pixels."""
    return PinholeCamera(CameraConfig(width=size, height=size))


def shifted_pose(camera: PinholeCamera | None = None) -> CameraPose:
    """The calibrated pose moved by :data:`CAMERA_SHIFT` and turned by :data:`CAMERA_TURN`."""
    return (camera or sim_camera()).pose.perturbed(CAMERA_SHIFT, CAMERA_TURN)


def geometry_record(camera: PinholeCamera | None = None,
                    keypoints: tuple[str, ...] = KEYPOINTS) -> dict:
    """A ``geometry`` record for the scene, the camera's K and calibrated pose."""
    camera = camera or sim_camera()
    return {
        "version": 1,
        "keypoints": list(keypoints),
        "landmarks": {name: list(LANDMARKS[name]) for name in keypoints if name in LANDMARKS},
        "target_support_plane_z": 0.0,
        "target_workspace": {"low": list(WORKSPACE["low"]), "high": list(WORKSPACE["high"])},
        "camera": {"width": camera.config.width, "height": camera.config.height,
                   "k": camera.intrinsics().reshape(-1).tolist(),
                   "frame_id": "camera_optical_frame",
                   "position": camera.pose.position.tolist(),
                   "quaternion_xyzw": camera.pose.quaternion.tolist()},
        "base_frame": "panda_link0",
    }


def scene_keypoints(pose: CameraPose, target=TARGET, camera: PinholeCamera | None = None,
                    keypoints: tuple[str, ...] = KEYPOINTS) -> np.ndarray:
    """Pixels (K, 2) of the target's centre, its foot (on z = 0) and the landmarks seen
    from ``pose``, rows in ``keypoints`` order."""
    target = np.asarray(target, float)
    points = {"target_centre": target, "target_foot": np.array([*target[:2], 0.0]),
              **{name: np.asarray(p, float) for name, p in LANDMARKS.items()}}
    return (camera or sim_camera()).project(np.stack([points[n] for n in keypoints]), pose)


def _graph(keypoints: np.ndarray, visibility: np.ndarray, size: int,
           embedding_dim: int) -> onnx.ModelProto:
    count = len(keypoints)
    consts = {
        "kp_const": np.asarray(keypoints, np.float32).reshape(1, count, 2),
        "vis_const": np.asarray(visibility, np.float32).reshape(1, count),
        "emb_weight": np.linspace(-1.0, 1.0, embedding_dim, dtype=np.float32)[None],
        "emb_bias": np.linspace(0.0, 0.5, embedding_dim, dtype=np.float32)[None],
        "zero": np.zeros((), np.float32),
        "shape_n1": np.array([-1, 1], np.int64),
        "shape_n11": np.array([-1, 1, 1], np.int64),
    }
    nodes = [
        helper.make_node("ReduceMean", ["image"], ["mean4"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Reshape", ["mean4", "shape_n1"], ["mean"]),
        helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
        helper.make_node("Mul", ["mean", "emb_weight"], ["emb_scaled"]),
        helper.make_node("Add", ["emb_scaled", "emb_bias"], ["embedding"]),
        helper.make_node("Reshape", ["nothing", "shape_n11"], ["nothing3"]),
        helper.make_node("Add", ["nothing3", "kp_const"], ["keypoints"]),
        helper.make_node("Add", ["nothing", "vis_const"], ["visibility"]),
    ]
    graph = helper.make_graph(
        nodes, "keypoint_encoder",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT,
                                       ["batch", embedding_dim]),
         helper.make_tensor_value_info("keypoints", TensorProto.FLOAT, ["batch", count, 2]),
         helper.make_tensor_value_info("visibility", TensorProto.FLOAT, ["batch", count])],
        [numpy_helper.from_array(v, k) for k, v in consts.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write_encoder(out_dir: Path, keypoints: np.ndarray, visibility=None,
                  geometry: dict | None = None, size: int = SIZE,
                  embedding_dim: int = EMBEDDING_DIM,
                  mutate: Callable[[dict], None] | None = None) -> tuple[Path, Path]:
    """Write ``encoder.onnx`` and ``manifest.json`` into ``out_dir``; returns their paths.

    Args:
        keypoints: (K, 2) network-input pixels every image gets.
        visibility: (K,) every image gets; default all 1.
        geometry: the entry's ``geometry`` record (default :func:`geometry_record`).
        mutate: edits the entry before it is sealed (``None`` to drop nothing).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    keypoints = np.asarray(keypoints, np.float64)
    visibility = np.ones(len(keypoints)) if visibility is None else visibility
    path = out_dir / "encoder.onnx"
    onnx.save(_graph(keypoints, visibility, size, embedding_dim), str(path))
    count = len(keypoints)
    entry = {
        "file": path.name, "sha256": sha256_file(path), "opset": 17,
        "size_bytes": path.stat().st_size, "robot": "panda",
        "inputs": [{"name": "image", "shape": ["batch", 3, size, size], "dtype": "float32"}],
        "outputs": [{"name": "embedding", "shape": ["batch", embedding_dim],
                     "dtype": "float32"},
                    {"name": "keypoints", "shape": ["batch", count, 2], "dtype": "float32"},
                    {"name": "visibility", "shape": ["batch", count], "dtype": "float32"}],
        "preprocessing": PreprocessConfig(width=size, height=size).to_dict(),
        "geometry": geometry if geometry is not None else geometry_record(sim_camera(size)),
        "training": {"command": "tests/keypoint_model.py (constant keypoints)"},
    }
    if mutate is not None:
        mutate(entry)
    manifest = out_dir / "manifest.json"
    manifest.write_text(json.dumps({"models": {"encoder": seal_entry(entry)}}, indent=2))
    return path, manifest
