"""Train the vision encoder from sim renders and export it to ONNX with its manifest entry.

One seeded command renders the dataset through the simulation (training profile's visual
randomization for training, the ``heldout`` profile for evaluation), trains
:class:`visuomotor_models.encoder.VisionEncoder` to find the image keypoints of the
target and of fixed scene landmarks, exports ``encoder.onnx`` (opset 17, dynamic batch),
and records SHA-256, I/O, preprocessing, the camera geometry the run time back-projects
with (``geometry``: keypoint names, landmark positions, calibrated intrinsics and pose),
this command, the full config and the held-out metrics (target positions computed by the
run time itself: the exported model through ONNX Runtime, then
``visuomotor_core.camera_geometry``) in ``manifest.json``::

    python -m visuomotor_models.train_encoder            # writes models/artifacts/
    python -m visuomotor_models.train_encoder --out-dir runs/enc1 --epochs 4
    python -m visuomotor_models.train_encoder --evaluate models/artifacts/encoder.onnx

The error statistics are also broken down by the distance from the arm's grasp point to
the target (< 5 cm, 5–15 cm, >= 15 cm): a hand close to the sphere hides part of it, and
that is where a reach needs the estimate most. ``--evaluate`` renders (or loads) the
dataset of the given options and reports these statistics for an already exported encoder
on its held-out split, without training.

Overwrite rule: the default output directory is the committed artifact location and is
updated in place (that is what re-training is for). Any other ``--out-dir`` that already
holds an ``encoder.onnx`` is refused unless ``--force``, so one run never silently
replaces another's artifact.

Images are shifted by a few random pixels during training (edge-replicated, keypoint
labels shifted with them), as a camera slightly off its pose would show them. A
photometric augmentation (per-channel gain and offset, brightness, contrast, blur, pixel
noise) on top of the sim's visual randomization keeps the network from keying on the exact
colours, light and sharpness of the training profile.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from visuomotor_core.encoder_runtime import INPUT_NAME, MODEL_NAME, OUTPUT_NAMES, EncoderRuntime
from visuomotor_core.estimate_metrics import (
    GOAL_MEDIAN_M,
    GOAL_P95_M,
    error_by_hand_distance,
)
from visuomotor_core.estimate_metrics import goal_met as bands_meet_goal
from visuomotor_core.image import PreprocessConfig, preprocess_batch
from visuomotor_models.dataset import KEYPOINTS, DatasetConfig, Split, build_dataset, landmarks
from visuomotor_models.encoder import EncoderConfig, VisionEncoder
from visuomotor_models.export import (
    ARTIFACTS_DIR,
    export_onnx,
    model_entry,
    trained_robot,
    write_manifest_entry,
)

_OCCLUDED_KEYPOINT_WEIGHT = 0.1
_EVAL_BATCH = 256
_VISIBILITY_WEIGHT = 2.0


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings.

    Attributes:
        epochs: passes over the training images.
        batch_size: images per step.
        lr: peak Adam learning rate (one-cycle schedule).
        weight_decay: AdamW weight decay.
        shift_px: maximum random image shift (pixels, each axis) during training.
        colour_jitter: strength of the photometric augmentation (0 = off), see
            :func:`photometric_jitter`.
        val_fraction: share of training-profile images kept for validation.
        threads: torch intra-op threads.
        seed: torch / numpy seed of initialisation and batching.
    """

    epochs: int = 10
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    shift_px: int = 6
    colour_jitter: float = 1.0
    val_fraction: float = 0.05
    threads: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 2:
            raise ValueError("TrainConfig: epochs >= 1 and batch_size >= 2 required")
        if not 0.0 < self.lr < 1.0:
            raise ValueError(f"TrainConfig.lr must be in (0, 1), got {self.lr}")
        if not 0 <= self.shift_px <= 32:
            raise ValueError(f"TrainConfig.shift_px must be in [0, 32], got {self.shift_px}")
        if not 0.0 <= self.colour_jitter <= 2.0:
            raise ValueError(f"TrainConfig.colour_jitter must be in [0, 2], got "
                             f"{self.colour_jitter}")
        if not 0.0 < self.val_fraction < 0.5:
            raise ValueError("TrainConfig.val_fraction must be in (0, 0.5)")
        if self.threads < 1:
            raise ValueError("TrainConfig.threads must be >= 1")


def shift_images(images: np.ndarray, max_shift: int, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Each image (N, H, W, 3) translated by a random integer offset in
    [-max_shift, max_shift] per axis, borders replicated; returns the images and the
    (du, dv) pixel offsets (N, 2) applied to their content."""
    n, h, w, _ = images.shape
    if max_shift == 0:
        return images, np.zeros((n, 2))
    padded = np.pad(images, ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)),
                    mode="edge")
    offsets = rng.integers(0, 2 * max_shift + 1, size=(n, 2))
    out = np.empty_like(images)
    for i, (dy, dx) in enumerate(offsets):
        out[i] = padded[i, dy:dy + h, dx:dx + w]
    return out, (max_shift - offsets[:, ::-1]).astype(np.float64)


def photometric_jitter(images: np.ndarray, strength: float, rng: np.random.Generator
                      ) -> np.ndarray:
    """Random per-image colour changes on uint8 images (N, H, W, 3): per-channel gain and
    offset, brightness, contrast about the image mean, Gaussian blur (on a third of the
    images, sigma up to 1.2 px) and Gaussian pixel noise, each scaled by ``strength``
    (0 = unchanged). Labels are unaffected."""
    if strength <= 0.0:
        return images
    n = images.shape[0]
    x = images.astype(np.float32)
    gain = 1.0 + strength * rng.uniform(-0.4, 0.4, (n, 1, 1, 3))
    brightness = 1.0 + strength * rng.uniform(-0.4, 0.2, (n, 1, 1, 1))
    offset = strength * rng.uniform(-25.0, 25.0, (n, 1, 1, 3))
    contrast = 1.0 + strength * rng.uniform(-0.3, 0.2, (n, 1, 1, 1))
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    x = (x - mean) * contrast + mean
    x = x * gain * brightness + offset
    for i in np.flatnonzero(rng.random(n) < 0.33):
        sigma = float(strength * rng.uniform(0.3, 1.2))
        x[i] = cv2.GaussianBlur(x[i], (0, 0), sigma)
    noise = strength * rng.uniform(0.0, 10.0, (n, 1, 1, 1))
    x += rng.standard_normal(x.shape, dtype=np.float32) * noise
    return np.clip(x, 0.0, 255.0).astype(np.uint8)


def _losses(model_out, pixels: torch.Tensor, keypoint_visible: torch.Tensor,
            input_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keypoint (input pixels, smooth L1; occluded keypoints down-weighted, those outside
    the image not counted) and visibility (BCE) losses."""
    _, keypoints, visibility = model_out
    inside = ((pixels >= 0.0) & (pixels <= input_size - 1)).all(dim=2).float()
    weight = inside * (_OCCLUDED_KEYPOINT_WEIGHT
                       + (1.0 - _OCCLUDED_KEYPOINT_WEIGHT) * keypoint_visible)
    error = torch.nn.functional.smooth_l1_loss(keypoints, pixels, reduction="none").sum(2)
    keypoint_loss = (weight * error).sum(1).mean()
    visibility_loss = torch.nn.functional.binary_cross_entropy(
        visibility.clamp(1e-6, 1 - 1e-6), keypoint_visible)
    return keypoint_loss, _VISIBILITY_WEIGHT * visibility_loss


def train(model: VisionEncoder, train: Split, config: TrainConfig,
          prep: PreprocessConfig) -> list[dict]:
    """Optimise ``model`` on ``train``; returns per-epoch loss records."""
    rng = np.random.default_rng(config.seed)
    n = len(train.targets)
    steps_per_epoch = n // config.batch_size
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr,
                                  weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=config.lr, total_steps=config.epochs * steps_per_epoch,
        pct_start=0.15)
    keypoint_visible = torch.as_tensor(train.keypoint_visible, dtype=torch.float32)
    input_size = prep.width
    history = []
    bar = tqdm(total=config.epochs * steps_per_epoch, desc="train encoder", unit="step")
    for epoch in range(config.epochs):
        model.train()
        order = rng.permutation(n)
        totals = np.zeros(2)
        for step in range(steps_per_epoch):
            idx = np.sort(order[step * config.batch_size:(step + 1) * config.batch_size])
            images, offsets = shift_images(train.images[idx], config.shift_px, rng)
            images = photometric_jitter(images, config.colour_jitter, rng)
            pixels = train.pixels[idx] + offsets[:, None, :]
            # A keypoint the shift moved out of the image is not visible any more.
            visible = keypoint_visible[idx] * torch.as_tensor(
                ((pixels >= 0) & (pixels <= input_size - 1)).all(axis=2), dtype=torch.float32)
            batch = torch.from_numpy(preprocess_batch(images, prep))
            losses = _losses(model(batch), torch.as_tensor(pixels, dtype=torch.float32),
                             visible, input_size)
            loss = sum(losses)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            totals += [value.item() for value in losses]
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, kp=f"{totals[0] / (step + 1):.3f}",
                            vis=f"{totals[1] / (step + 1):.3f}")
        history.append({"epoch": epoch + 1, "keypoint_loss": totals[0] / steps_per_epoch,
                        "visibility_loss": totals[1] / steps_per_epoch})
    bar.close()
    return history


def predict(estimate_batch, split: Split, prep: PreprocessConfig
            ) -> tuple[np.ndarray, np.ndarray]:
    """Positions (N, 3) and confidences (N,) from ``estimate_batch(preprocessed) ->
    (positions, confidences)``."""
    positions, confidences = [], []
    for start in range(0, len(split.targets), _EVAL_BATCH):
        batch = preprocess_batch(split.images[start:start + _EVAL_BATCH], prep)
        position, confidence = estimate_batch(batch)
        positions.append(np.asarray(position))
        confidences.append(np.asarray(confidence).reshape(-1))
    return np.concatenate(positions), np.concatenate(confidences)


def keypoint_metrics(keypoints: np.ndarray, split: Split) -> dict:
    """Per-keypoint pixel error median / p95 over the samples where it is visible."""
    errors = np.linalg.norm(keypoints - split.pixels, axis=2)
    out = {}
    for k, name in enumerate(KEYPOINTS):
        chosen = errors[split.keypoint_visible[:, k] >= 0.5, k]
        out[name] = {"count": len(chosen),
                     "median_px": float(np.median(chosen)) if len(chosen) else None,
                     "p95_px": float(np.percentile(chosen, 95)) if len(chosen) else None}
    return out


def error_metrics(positions: np.ndarray, confidences: np.ndarray, split: Split) -> dict:
    """Target-position error statistics (m) over all images, over visible ones, over the
    confident ones (confidence >= 0.5: what the policy's goal filter uses) and by
    hand–target distance."""
    errors = np.linalg.norm(positions - split.targets, axis=1)
    visible = split.visible >= 0.5
    confident = confidences >= 0.5
    metrics = {
        "count": len(errors),
        "median_m": float(np.median(errors)),
        "p95_m": float(np.percentile(errors, 95)),
        "mean_m": float(errors.mean()),
        "max_m": float(errors.max()),
        "per_axis_mae_m": np.abs(positions - split.targets).mean(0).round(5).tolist(),
        "visible_fraction_ge_0_5": float(visible.mean()),
        "mean_confidence": float(confidences.mean()),
    }
    if visible.any():
        metrics["visible_median_m"] = float(np.median(errors[visible]))
        metrics["visible_p95_m"] = float(np.percentile(errors[visible], 95))
    metrics["confident_fraction"] = float(confident.mean())
    if confident.any():
        metrics["confident_median_m"] = float(np.median(errors[confident]))
        metrics["confident_p95_m"] = float(np.percentile(errors[confident], 95))
    metrics["by_hand_distance"] = error_by_hand_distance(errors, split.hand_distance())
    metrics["confident_by_hand_distance"] = error_by_hand_distance(
        errors[confident], split.hand_distance()[confident])
    return metrics


def goal_met(metrics: dict) -> bool:
    """Median <= GOAL_MEDIAN_M and p95 <= GOAL_P95_M in every hand–target distance band."""
    return bands_meet_goal(metrics["by_hand_distance"])


def runtime_metrics(runtime: EncoderRuntime, split: Split) -> dict:
    """:func:`error_metrics` of an exported encoder on ``split``, run through ONNX Runtime
    with the manifest's preprocessing."""
    metrics = error_metrics(*predict(runtime.estimate_batch, split,
                                     runtime.preprocess_config), split)
    keypoints = np.concatenate([
        runtime.run_raw(preprocess_batch(split.images[s:s + _EVAL_BATCH],
                                         runtime.preprocess_config))["keypoints"]
        for s in range(0, len(split.targets), _EVAL_BATCH)])
    metrics["keypoints"] = keypoint_metrics(keypoints, split)
    return metrics


def evaluate_onnx(onnx_path: Path, split: Split) -> dict:
    """:func:`runtime_metrics` of the encoder file ``onnx_path`` (its manifest beside it,
    hash checked)."""
    return runtime_metrics(EncoderRuntime(onnx_path.parent / "manifest.json", onnx_path), split)


def geometry_record() -> dict:
    """The manifest's ``geometry``: keypoint names in output order, landmark positions,
    the plane the target's foot stands on, the target workspace and the calibrated camera
    (intrinsics at the image size trained on, optical-frame pose in the base frame)."""
    from visuomotor_models.dataset import _world

    world = _world(DatasetConfig().arm_noise_std)
    camera, target = world.camera, world.config.target
    fixed = landmarks(world)
    return {
        "version": 1,
        "keypoints": list(KEYPOINTS),
        "landmarks": {name: fixed[name].round(6).tolist() for name in KEYPOINTS
                      if name in fixed},
        "target_support_plane_z": 0.0,
        "target_workspace": {"low": [target.x_range[0], target.y_range[0], target.z_range[0]],
                             "high": [target.x_range[1], target.y_range[1],
                                      target.z_range[1]]},
        "camera": {"width": camera.config.width, "height": camera.config.height,
                   "k": camera.intrinsics().reshape(-1).tolist(),
                   "frame_id": camera.config.frame_id,
                   "position": camera.pose.position.tolist(),
                   "quaternion_xyzw": camera.pose.quaternion.tolist()},
        "base_frame": world.config.description.base_frame,
    }


def export_encoder(model: VisionEncoder, prep: PreprocessConfig, out_dir: Path,
                   example: torch.Tensor, fields: dict) -> tuple[Path, Path]:
    """Export ``model`` to ``out_dir/encoder.onnx`` and write its manifest entry
    (SHA-256, I/O, preprocessing, geometry, ``fields``); returns (onnx path, manifest
    path)."""
    onnx_path = out_dir / f"{MODEL_NAME}.onnx"
    tensors = export_onnx(model.eval(), [example], [INPUT_NAME], list(OUTPUT_NAMES),
                          onnx_path)
    entry = {"preprocessing": prep.to_dict(), "geometry": geometry_record(),
             "description": "camera image -> image keypoints of the target (centre, foot "
                            "of its post) and of fixed scene landmarks with their "
                            "visibility, and an image embedding; the run time computes "
                            "the target position from them", **fields}
    manifest = out_dir / "manifest.json"
    write_manifest_entry(manifest, MODEL_NAME, model_entry(onnx_path, tensors,
                                                           trained_robot(), **entry))
    return onnx_path, manifest


def _check_out_dir(out_dir: Path, force: bool) -> None:
    default = out_dir.resolve() == ARTIFACTS_DIR.resolve()
    if not default and (out_dir / f"{MODEL_NAME}.onnx").exists() and not force:
        raise SystemExit(f"{out_dir / (MODEL_NAME + '.onnx')} exists from another run; "
                         f"choose a new --out-dir or pass --force to replace it")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    d, t = DatasetConfig(), TrainConfig()
    parser = argparse.ArgumentParser(
        prog="python -m visuomotor_models.train_encoder",
        description="Render the encoder dataset in the sim, train the encoder, export "
                    "encoder.onnx and its manifest entry with held-out metrics.")
    parser.add_argument("--seed", type=int, default=d.seed, help="seed of every draw")
    parser.add_argument("--n-train", type=int, default=d.n_train, help="training images")
    parser.add_argument("--n-heldout", type=int, default=d.n_heldout,
                        help="held-out evaluation images (heldout profile)")
    parser.add_argument("--heldout-profile", default=d.heldout_profile,
                        help="randomization profile of the held-out split (e.g. "
                             "visual_beyond: visual conditions past the training ranges)")
    parser.add_argument("--arm-noise", type=float, default=d.arm_noise_std,
                        help="std of arm joint angles around home, rad")
    parser.add_argument("--near-target-fraction", type=float, default=d.near_target_fraction,
                        help="share of images with the arm's grasp point placed near the "
                             "target (hand close to / occluding the sphere)")
    parser.add_argument("--near-target-radius", type=float, default=d.near_target_radius,
                        help="largest grasp-point offset from the target in those images, m")
    parser.add_argument("--workers", type=int, default=d.workers, help="rendering processes")
    parser.add_argument("--epochs", type=int, default=t.epochs)
    parser.add_argument("--batch-size", type=int, default=t.batch_size)
    parser.add_argument("--lr", type=float, default=t.lr, help="peak learning rate")
    parser.add_argument("--shift-px", type=int, default=t.shift_px,
                        help="max random image shift during training, pixels")
    parser.add_argument("--colour-jitter", type=float, default=t.colour_jitter,
                        help="photometric augmentation strength (0 = off)")
    parser.add_argument("--threads", type=int, default=t.threads, help="torch threads")
    parser.add_argument("--input-size", type=int, default=EncoderConfig().input_size,
                        help="model input side, pixels")
    parser.add_argument("--out-dir", type=Path, default=ARTIFACTS_DIR,
                        help="where encoder.onnx and manifest.json go (default: the "
                             "committed models/artifacts, updated in place)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="reuse/save the rendered dataset here (keyed by its config)")
    parser.add_argument("--force", action="store_true",
                        help="replace an existing encoder.onnx in a non-default --out-dir")
    parser.add_argument("--checkpoint", type=Path, default=None, metavar="PT",
                        help="torch checkpoint of the trained network (weights, config, "
                             "loss history): written after training, or, when it exists, "
                             "loaded instead of training (export and evaluation only)")
    parser.add_argument("--evaluate", type=Path, default=None, metavar="ONNX",
                        help="only evaluate this exported encoder (manifest.json beside it) "
                             "on the held-out split of the dataset options and print the "
                             "metrics; trains and writes nothing")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out_dir: Path = args.out_dir
    started = time.perf_counter()
    data_cfg = DatasetConfig(n_train=args.n_train, n_heldout=args.n_heldout,
                             heldout_profile=args.heldout_profile,
                             arm_noise_std=args.arm_noise,
                             near_target_fraction=args.near_target_fraction,
                             near_target_radius=args.near_target_radius, seed=args.seed,
                             workers=args.workers)
    if args.evaluate is not None:
        _, heldout = build_dataset(data_cfg, args.cache_dir)
        print(json.dumps({"heldout": evaluate_onnx(args.evaluate, heldout)}, indent=2))
        return 0
    _check_out_dir(out_dir, args.force)
    train_cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                            shift_px=args.shift_px,
                            colour_jitter=args.colour_jitter, threads=args.threads, seed=args.seed)
    model_cfg = EncoderConfig(input_size=args.input_size, supervised_keypoints=len(KEYPOINTS))
    prep = PreprocessConfig(width=args.input_size, height=args.input_size)
    torch.manual_seed(train_cfg.seed)
    torch.set_num_threads(train_cfg.threads)

    train_split, heldout = build_dataset(data_cfg, args.cache_dir)
    n_val = max(1, int(len(train_split.targets) * train_cfg.val_fraction))
    fit, val = train_split.subset(slice(n_val, None)), train_split.subset(slice(0, n_val))
    render_s = time.perf_counter() - started

    model = VisionEncoder(model_cfg)
    if args.checkpoint is not None and args.checkpoint.is_file():
        saved = torch.load(args.checkpoint, weights_only=False)
        if saved["model"] != model_cfg.to_dict() or saved["train"] != asdict(train_cfg):
            raise SystemExit(f"{args.checkpoint} was trained with other settings "
                             f"({saved['model']}, {saved['train']})")
        model.load_state_dict(saved["state_dict"])
        history, train_s = saved["history"], saved["train_s"]
    else:
        train_start = time.perf_counter()
        history = train(model, fit, train_cfg, prep)
        train_s = time.perf_counter() - train_start
        if args.checkpoint is not None:
            args.checkpoint.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"state_dict": model.state_dict(), "model": model_cfg.to_dict(),
                        "train": asdict(train_cfg), "history": history, "train_s": train_s},
                       args.checkpoint)
    model.eval()

    command = "python -m visuomotor_models.train_encoder " + shlex.join(
        sys.argv[1:] if argv is None else argv)
    entry_fields = {
        "training": {"command": command.strip(), "dataset": asdict(data_cfg),
                     "train": asdict(train_cfg), "model": model_cfg.to_dict(),
                     "history": history},
    }
    example = torch.from_numpy(preprocess_batch(heldout.images[:2], prep))
    onnx_path, manifest = export_encoder(model, prep, out_dir, example, entry_fields)

    runtime = EncoderRuntime(manifest, onnx_path)
    metrics = {
        "heldout": runtime_metrics(runtime, heldout),
        "training_profile_validation": runtime_metrics(runtime, val),
    }
    held = metrics["heldout"]
    metrics["goal"] = {"median_m": GOAL_MEDIAN_M, "p95_m": GOAL_P95_M,
                       "per": "hand-target distance band", "met": goal_met(held)}
    # render: this run's rendering (or cache load); train: the optimisation, also when this
    # run loaded it from --checkpoint.
    metrics["timing_s"] = {"render": round(render_s, 1), "train": round(train_s, 1),
                           "total": round(time.perf_counter() - started, 1)}
    entry_fields["metrics"] = metrics
    export_encoder(model, prep, out_dir, example, entry_fields)
    print(json.dumps({"heldout": held, "goal": metrics["goal"],
                      "timing_s": metrics["timing_s"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
