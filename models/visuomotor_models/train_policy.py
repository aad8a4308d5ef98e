"""Train the dynamics-aware reach policy (RMA teacher/student + DAgger) and its ablation.

One seeded command trains both, with the same budget, in the ``training`` randomization
profile (state-only sim, no rendering), and exports them to ONNX with manifest entries::

    python -m visuomotor_models.train_policy            # ~10-15 min on 2 CPU cores
    python -m visuomotor_models.train_policy --quick    # smoke run, ~1 min

Recipe (per model, identical budget):

1. Iteration 0: the privileged expert (:mod:`visuomotor_sim.expert`, knows the true
   target and dynamics) drives the episodes with exploration noise; every step is stored
   as (observation, history, privileged dynamics vector e, expert action, the expert's sag
   offset).
2. Fit. Dynamics-aware model: teacher ``pi(obs, mu(e))`` and student ``pi(obs, phi(history))``
   share the action head ``pi``; loss = BC(teacher) + BC(student) + w * |phi(h) - sg(mu(e))|^2
   (RMA phases 1 and 2 trained jointly). The head's label is the expert action minus the
   expert's own sag offset (the steady joint offset the true dynamics cause): at run time the
   sag estimator's ``B(q) theta_hat`` (``visuomotor_core.sag_estimator.SagEstimator``,
   identified from the history) takes its place, so the network learns the motion and the
   residual dynamics, and the sag, linear in ``theta``, extrapolates. Ablation: BC of
   ``pi(obs)`` on the full expert action (no history, hence no estimator).
3. DAgger iterations: the learner drives (expert with probability beta), the expert labels
   the states the learner visits, data is aggregated, step 2 is repeated.

Outputs: ``<out>/policy.onnx`` (student) and ``<out>/policy_no_history.onnx`` (ablation),
manifest entries ``policy`` / ``policy_no_history`` in ``<out>/manifest.json``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from visuomotor_core.goal_filter import GoalIntegrator, GoalIntegratorConfig
from visuomotor_core.policy_features import (
    HISTORY_DIM,
    N_JOINTS,
    OBSERVATION_DIM,
    layout_description,
    model_hand_function,
)
from visuomotor_core.policy_runtime import PolicyConfig, PolicyStep
from visuomotor_core.sag_estimator import SagEstimator, SagEstimatorConfig
from visuomotor_models.export import (
    export_onnx,
    model_entry,
    trained_robot,
    write_manifest_entry,
)
from visuomotor_models.policy import (
    PRIVILEGED_DIM,
    MemorylessPolicy,
    PolicyNetConfig,
    StudentPolicy,
    TeacherPolicy,
)
from visuomotor_models.policy_sim import ReachSim, SimConfig
from visuomotor_sim.expert import ExpertConfig, ReachExpert

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "artifacts"
MODEL_NAMES = {"history": "policy", "no_history": "policy_no_history"}


@dataclass(frozen=True)
class TrainConfig:
    """Budget and hyper-parameters (identical for the policy and its ablation).

    Attributes:
        seed: seeds torch, numpy and the episode seeds.
        profile: randomization profile of the training episodes.
        episodes: episodes per DAgger iteration (first = expert with noise).
        betas: probability that the expert drives, per iteration.
        exploration_std: Gaussian noise on executed expert actions (unitless action).
        expert_max_step: the expert's largest hand displacement per policy step, m (its
            approach speed; ``ExpertConfig.max_step``).
        gradient_steps: optimizer steps after each iteration's data collection.
        batch_size, lr: optimizer settings; within each fit the learning rate decays from
            ``lr`` to ``lr * lr_final_ratio`` on a cosine (fine detail near the goal, where
            actions are small, is fitted last).
        latent_weight: weight of the latent regression loss.
        sag_estimator: settings of the dynamics-aware model's sag estimator (its ``kp`` is
            replaced by the sim controller's); None trains that model without it (the
            learned latent alone).
        goal_integrator: settings of the dynamics-aware model's goal integrator; None
            trains and deploys that model without it.
        net: network sizes.
        sim: episode settings.
    """

    seed: int = 0
    profile: str = "training"
    episodes: tuple[int, ...] = (240, 160, 160, 160, 160)
    betas: tuple[float, ...] = (1.0, 0.5, 0.25, 0.0, 0.0)
    exploration_std: float = 0.15
    expert_max_step: float = ExpertConfig.max_step
    gradient_steps: int = 4000
    batch_size: int = 256
    lr: float = 1e-3
    lr_final_ratio: float = 0.1
    latent_weight: float = 1.0
    sag_estimator: SagEstimatorConfig | None = field(default_factory=SagEstimatorConfig)
    goal_integrator: GoalIntegratorConfig | None = field(default_factory=GoalIntegratorConfig)
    net: PolicyNetConfig = field(default_factory=PolicyNetConfig)
    sim: SimConfig = field(default_factory=SimConfig)

    def __post_init__(self) -> None:
        if len(self.episodes) != len(self.betas) or not self.episodes:
            raise ValueError("TrainConfig: episodes and betas need the same, non-zero length")
        if any(n < 1 for n in self.episodes) or any(not 0.0 <= b <= 1.0 for b in self.betas):
            raise ValueError("TrainConfig: episodes must be >= 1 and betas in [0, 1]")
        if self.gradient_steps < 1 or self.batch_size < 1 or self.lr <= 0.0:
            raise ValueError("TrainConfig: gradient_steps, batch_size >= 1 and lr > 0 needed")
        if not 0.0 < self.lr_final_ratio <= 1.0:
            raise ValueError("TrainConfig: lr_final_ratio must be in (0, 1]")


class Dataset:
    """Aggregated (observation, history, privileged, expert action, true sag feed-forward)
    samples; the feed-forward is in action units (zeros where no estimator is used)."""

    KEYS = ("obs", "hist", "priv", "act", "ff")

    def __init__(self) -> None:
        self._parts: dict[str, list[np.ndarray]] = {k: [] for k in self.KEYS}

    def add(self, obs: np.ndarray, hist: np.ndarray, priv: np.ndarray, act: np.ndarray,
            ff: np.ndarray) -> None:
        for key, value in zip(self.KEYS, (obs, hist, priv, act, ff), strict=True):
            self._parts[key].append(np.array(value, np.float32))

    def tensors(self) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(np.stack(v)) for k, v in self._parts.items()}

    def __len__(self) -> int:
        return len(self._parts["obs"])


class Learner:
    """A model being trained plus how to fit it and query it one step at a time."""

    def __init__(self, kind: str, cfg: TrainConfig) -> None:
        self.kind = kind
        self.cfg = cfg
        if kind == "history":
            self.student = StudentPolicy(cfg.net)
            self.teacher = TeacherPolicy(cfg.net, head=self.student.head)
            params = list(self.student.parameters()) + list(self.teacher.encoder.parameters())
        else:
            self.student = MemorylessPolicy(cfg.net)
            self.teacher = None
            params = list(self.student.parameters())
        self.optimizer = torch.optim.Adam(params, lr=cfg.lr)
        self._fitted = False

    @torch.no_grad()
    def infer(self, obs: np.ndarray, hist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = self.student(torch.from_numpy(obs), torch.from_numpy(np.ascontiguousarray(hist)))
        if isinstance(out, tuple):
            return out[0].numpy(), out[1].numpy()
        return out.numpy(), np.zeros((1, 0), np.float32)

    def _fit_normalizers(self, data: dict[str, torch.Tensor]) -> None:
        self.student.head.obs_norm.fit(data["obs"])
        if self.kind == "history":
            self.student.adaptation.history_norm.fit(data["hist"])

    def fit(self, data: dict[str, torch.Tensor], steps: int, rng: torch.Generator) -> float:
        """``steps`` optimizer steps on random minibatches; returns the mean last-100 loss."""
        if not self._fitted:
            self._fit_normalizers(data)
            self._fitted = True
        n, mse, losses = len(data["obs"]), nn.functional.mse_loss, []
        self.student.train()
        low = self.cfg.lr * self.cfg.lr_final_ratio
        for step in range(steps):
            cosine = 0.5 * (1.0 + np.cos(np.pi * step / steps))
            for group in self.optimizer.param_groups:
                group["lr"] = low + (self.cfg.lr - low) * cosine
            idx = torch.randint(0, n, (self.cfg.batch_size,), generator=rng)
            obs, hist, act = data["obs"][idx], data["hist"][idx], data["act"][idx]
            if self.kind == "history":
                act = act - data["ff"][idx]  # the estimator supplies the sag at run time
                a_student, z_hat = self.student(obs, hist)
                a_teacher, z = self.teacher(obs, data["priv"][idx])
                loss = (mse(a_student, act) + mse(a_teacher, act)
                        + self.cfg.latent_weight * mse(z_hat, z.detach()))
            else:
                loss = mse(self.student(obs, hist), act)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            losses.append(float(loss.detach()))
        self.student.eval()
        return float(np.mean(losses[-100:]))


def sag_config(kind: str, cfg: TrainConfig, sim: ReachSim) -> SagEstimatorConfig | None:
    """The sag estimator of a model kind: the dynamics-aware model's, against the sim's gains."""
    if kind != "history" or cfg.sag_estimator is None:
        return None
    return replace(cfg.sag_estimator, kp=tuple(float(k) for k in sim.kp))


def integrator_config(kind: str, cfg: TrainConfig) -> GoalIntegratorConfig | None:
    """The goal integrator of a model kind (memory: the dynamics-aware model only)."""
    return cfg.goal_integrator if kind == "history" else None


def collect(sim: ReachSim, expert: ReachExpert, learner: Learner | None, seeds: list[int],
            profile: str, beta: float, noise_std: float, rng: np.random.Generator,
            data: Dataset, history_length: int, sag: SagEstimatorConfig | None,
            integrator: GoalIntegratorConfig | None) -> float:
    """Run episodes, label every visited state with the expert; returns the success rate.

    Features, sag feed-forward, goal integral and history go through ``PolicyStep`` exactly
    as at run time.
    """
    hand = model_hand_function(sim.model)
    scale = sim.config.action_scale
    step_cfg = PolicyConfig(action_scale=scale, history_length=history_length)
    successes = 0
    for seed in seeds:
        estimator = SagEstimator(sim.model, sag) if sag is not None else None
        runner = PolicyStep(learner.infer if learner else None, hand, step_cfg, estimator,
                            GoalIntegrator(integrator) if integrator is not None else None)
        q, qd = sim.reset(profile, seed)
        expert.reset(sim.dynamics)
        privileged = sim.dynamics.as_vector()
        expert_drives = learner is None or rng.random() < beta
        while not sim.done:
            obs, hist = runner.features(q, qd, sim.target_estimate)
            label = expert.act(q, sim.target)
            ff = expert.last_sag / scale if estimator else np.zeros(N_JOINTS)
            data.add(obs[0], hist[0], privileged, label, ff)
            if expert_drives:
                action = np.clip(label + rng.normal(0.0, noise_std, N_JOINTS), -1.0, 1.0)
            else:
                action = runner.compose(learner.infer(obs, hist)[0][0])
            runner.commit(q, action)
            q, qd = sim.step(action)
        successes += sim.success
    return successes / len(seeds)


def train_one(kind: str, cfg: TrainConfig, sim: ReachSim, log) -> Learner:
    """DAgger training of one model kind ("history" or "no_history")."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    learner = Learner(kind, cfg)
    expert = ReachExpert(ExpertConfig(action_scale=cfg.sim.action_scale, kp=tuple(sim.kp),
                                      max_step=cfg.expert_max_step))
    sag = sag_config(kind, cfg, sim)
    data = Dataset()
    next_seed = cfg.seed * 1_000_000
    for it, (episodes, beta) in enumerate(zip(cfg.episodes, cfg.betas, strict=True)):
        start = time.perf_counter()
        seeds = list(range(next_seed, next_seed + episodes))
        next_seed += episodes
        rate = collect(sim, expert, learner if it > 0 else None, seeds, cfg.profile, beta,
                       cfg.exploration_std if it == 0 else 0.0, rng, data,
                       cfg.net.history_length, sag, integrator_config(kind, cfg))
        collect_s = time.perf_counter() - start
        loss = learner.fit(data.tensors(), cfg.gradient_steps, gen)
        log(f"[{kind}] iter {it + 1}/{len(cfg.episodes)} beta={beta:.2f} episodes={episodes} "
            f"success={rate:.2f} samples={len(data)} loss={loss:.4f} "
            f"collect={collect_s:.0f}s fit={time.perf_counter() - start - collect_s:.0f}s")
    expert.close()
    return learner


def export(learner: Learner, cfg: TrainConfig, sim: ReachSim, out_dir: Path, command: str,
           train_seconds: float) -> Path:
    """Write the ONNX file and its manifest entry; returns the ONNX path."""
    name = MODEL_NAMES[learner.kind]
    path = out_dir / f"{name}.onnx"
    h = cfg.net.history_length
    sag = sag_config(learner.kind, cfg, sim)
    integrator = integrator_config(learner.kind, cfg)
    example = (torch.zeros(1, OBSERVATION_DIM), torch.zeros(1, h, HISTORY_DIM))
    outputs = ["action", "dynamics_latent"] if learner.kind == "history" else ["action"]
    tensors = export_onnx(learner.student, example, ["observation", "history"], outputs, path)
    graph_inputs = {i.name for i in onnx.load(str(path)).graph.input}
    # The exporter drops inputs a graph never reads (the ablation's history).
    tensors["inputs"] = [t for t in tensors["inputs"] if t["name"] in graph_inputs]
    entry = model_entry(
        path, tensors, trained_robot(),
        kind="policy",
        policy={"uses_history": learner.kind == "history", "history_length": h,
                "action_scale": cfg.sim.action_scale, "policy_rate_hz": cfg.sim.policy_hz,
                "control_rate_hz": float(sim.env.controller.config.rate_hz),
                "latent_dim": cfg.net.latent_dim if learner.kind == "history" else 0,
                "privileged_dim": PRIVILEGED_DIM, "layout": layout_description(),
                "sag_estimator": None if sag is None else asdict(sag),
                "goal_integrator": None if integrator is None else asdict(integrator)},
        training={"command": command, "config": asdict(cfg),
                  "wall_time_s": round(train_seconds, 1)},
        metrics={})
    write_manifest_entry(out_dir / "manifest.json", name, entry)
    return path


def quick_config(seed: int) -> TrainConfig:
    """A tiny budget for smoke tests."""
    return TrainConfig(seed=seed, episodes=(6, 4), betas=(1.0, 0.0), gradient_steps=60,
                       batch_size=64)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="train-policy", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Writes <out>/policy.onnx, <out>/policy_no_history.onnx and their entries in "
               "<out>/manifest.json (existing entries of other models are kept).")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"artifact directory (default {DEFAULT_OUT})")
    parser.add_argument("--only", choices=sorted(MODEL_NAMES), default=None,
                        help="train one of the two models only")
    parser.add_argument("--quick", action="store_true", help="tiny budget (smoke test)")
    parser.add_argument("--profile", default=None,
                        help="randomization profile of the training episodes (default: "
                             "TrainConfig's, 'training')")
    parser.add_argument("--no-sag-estimator", action="store_true",
                        help="train the dynamics-aware model without the sag estimator (the "
                             "learned latent alone; an ablation of the estimator)")
    parser.add_argument("--no-goal-integrator", action="store_true",
                        help="train the dynamics-aware model without the goal integrator (an "
                             "ablation of the integrator)")
    parser.add_argument("--expert-max-step", type=float, default=None,
                        help="the expert's largest hand step per policy step, m (default: "
                             "TrainConfig's)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = quick_config(args.seed) if args.quick else TrainConfig(seed=args.seed)
    if args.profile is not None:
        cfg = replace(cfg, profile=args.profile)
    if args.no_sag_estimator:
        cfg = replace(cfg, sag_estimator=None)
    if args.no_goal_integrator:
        cfg = replace(cfg, goal_integrator=None)
    if args.expert_max_step is not None:
        cfg = replace(cfg, expert_max_step=args.expert_max_step)
    command = "python -m visuomotor_models.train_policy " + shlex.join(argv or sys.argv[1:])
    sim = ReachSim(cfg.sim)
    kinds = [args.only] if args.only else ["history", "no_history"]
    summary = {}
    for kind in kinds:
        start = time.perf_counter()
        learner = train_one(kind, cfg, sim, lambda msg: print(msg, flush=True))
        elapsed = time.perf_counter() - start
        path = export(learner, cfg, sim, args.out, command.strip(), elapsed)
        summary[kind] = {"onnx": str(path), "seconds": round(elapsed, 1)}
        print(f"[{kind}] exported {path} after {elapsed:.0f}s", flush=True)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
