"""Dynamics-aware policy at run time: feature builders, state/action history, ONNX inference.

The policy maps what the encoder saw (the target position estimate; the encoder's
``embedding`` is *not* an input of this policy) plus proprioception and a window of recent
states and actions to a joint-target residual. Training (``visuomotor_models``) and every
runtime build their inputs with the functions of this module, so features are identical.

Feature layout (all float32, SI units, robot base frame ``panda_link0``):

``observation`` [D_obs = 23]
    ``q`` (7, rad) | ``qd`` (7, rad/s) | ``target`` (3, m) | ``hand`` (3, m, grasp point by
    forward kinematics of ``q``) | ``target - hand`` (3, m)

``history`` [H, D_h = 28], rows oldest -> newest, one row per policy step
    ``q`` (7, rad) | ``qd`` (7, rad/s) | ``commanded`` (7, rad: the joint-target residual
    ``clip(a, -1, 1) * action_scale`` applied at the previous step) | ``shortfall`` (7, rad:
    commanded displacement minus achieved displacement ``q_t - q_{t-1}``; its steady value is
    the sag that payload, friction and weak actuators cause).

The previous action is deliberately *not* part of ``observation``: it is one step of memory,
and the no-history ablation must be memoryless. It reaches the policy through ``history``.

Action: ``action`` in [-1, 1]^7; joint targets ``q_target = q + action * action_scale`` (rad).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

N_JOINTS = 7
OBSERVATION_FIELDS: tuple[tuple[str, int], ...] = (
    ("q", N_JOINTS), ("qd", N_JOINTS), ("target", 3), ("hand", 3), ("target_minus_hand", 3),
)
HISTORY_FIELDS: tuple[tuple[str, int], ...] = (
    ("q", N_JOINTS), ("qd", N_JOINTS), ("commanded", N_JOINTS), ("shortfall", N_JOINTS),
)
OBSERVATION_DIM = sum(size for _, size in OBSERVATION_FIELDS)
HISTORY_DIM = sum(size for _, size in HISTORY_FIELDS)
DEFAULT_HISTORY_LENGTH = 10
DEFAULT_ACTION_SCALE = 0.15  # rad per unit action
GRASP_LINK = "panda_grasptarget"

HandFunction = Callable[[np.ndarray], np.ndarray]
"""Maps joint positions q (7,) rad to the grasp-point position (3,) m, base frame."""


def layout_description() -> dict:
    """The feature layout as plain data (stored in the model manifest)."""
    return {
        "observation": [{"name": n, "size": s} for n, s in OBSERVATION_FIELDS],
        "history": [{"name": n, "size": s} for n, s in HISTORY_FIELDS],
        "history_order": "oldest_to_newest",
        "action": "q_target = q + clip(action, -1, 1) * action_scale (rad)",
        "frame": "panda_link0",
        "embedding_used": False,
    }


def model_hand_function(model, link: str = GRASP_LINK) -> HandFunction:
    """Grasp-point position from a :class:`visuomotor_core.robot_model.RobotModel` (FK)."""

    def hand(q: np.ndarray) -> np.ndarray:
        return np.asarray(model.forward_kinematics(q, link))[:3, 3]

    return hand


def build_observation(q: np.ndarray, qd: np.ndarray, target: np.ndarray, hand: np.ndarray,
                      out: np.ndarray | None = None) -> np.ndarray:
    """Observation vector [OBSERVATION_DIM] float32 (layout in the module docstring).

    Args:
        q, qd: measured joint positions (rad) and velocities (rad/s), shape (7,).
        target: target position estimate (m, base frame), shape (3,).
        hand: grasp-point position (m, base frame), shape (3,).
        out: optional preallocated float32 array to fill (no allocation then).
    """
    obs = np.empty(OBSERVATION_DIM, np.float32) if out is None else out
    obs[0:7] = q
    obs[7:14] = qd
    obs[14:17] = target
    obs[17:20] = hand
    obs[20:23] = np.subtract(target, hand)
    return obs


def build_history_row(q: np.ndarray, qd: np.ndarray, previous_q: np.ndarray,
                      commanded: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """One history row [HISTORY_DIM] float32.

    Args:
        q, qd: joint state now (rad, rad/s).
        previous_q: joint positions at the previous policy step (rad).
        commanded: joint-target residual applied at the previous step (rad).
    """
    row = np.empty(HISTORY_DIM, np.float32) if out is None else out
    row[0:7] = q
    row[7:14] = qd
    row[14:21] = commanded
    row[21:28] = commanded - (q - previous_q)
    return row


class HistoryBuffer:
    """Fixed window of the last ``length`` history rows, oldest first, no per-step allocation.

    Per policy step: :meth:`push` the measured state (uses the command recorded by the
    previous :meth:`record_command`), read :attr:`window`, act, then :meth:`record_command`.
    After :meth:`reset` the window holds ``length`` copies of the first state with zero
    commands.
    """

    def __init__(self, length: int = DEFAULT_HISTORY_LENGTH) -> None:
        if length < 1:
            raise ValueError(f"history length must be >= 1, got {length}")
        self.length = length
        self._rows = np.zeros((length, HISTORY_DIM), np.float32)
        self._previous_q = np.zeros(N_JOINTS)
        self._command = np.zeros(N_JOINTS)
        self._empty = True

    @property
    def window(self) -> np.ndarray:
        """The window [length, HISTORY_DIM] float32, oldest row first (a view: copy to keep)."""
        return self._rows

    @property
    def empty(self) -> bool:
        return self._empty

    def reset(self) -> None:
        """Forget everything; the next push fills the whole window."""
        self._rows.fill(0.0)
        self._command.fill(0.0)
        self._empty = True

    def push(self, q: np.ndarray, qd: np.ndarray) -> np.ndarray:
        """Append the state measured now; returns :attr:`window`."""
        q = np.asarray(q, np.float64)
        if self._empty:
            self._previous_q[:] = q
            self._command.fill(0.0)
            build_history_row(q, qd, self._previous_q, self._command, self._rows[-1])
            self._rows[:-1] = self._rows[-1]
            self._empty = False
        else:
            self._rows[:-1] = self._rows[1:].copy()
            build_history_row(q, qd, self._previous_q, self._command, self._rows[-1])
        self._previous_q[:] = q
        return self._rows

    def record_command(self, commanded: np.ndarray) -> None:
        """The joint-target residual (rad) applied after the latest push."""
        self._command[:] = commanded


def action_to_targets(q: np.ndarray, action: np.ndarray, action_scale: float) -> np.ndarray:
    """Absolute joint targets (rad) from a policy action: ``q + clip(a, -1, 1) * scale``."""
    return np.asarray(q, np.float64) + np.clip(action, -1.0, 1.0) * action_scale


@dataclass
class GoalFilter:
    """The target position the policy acts on, kept from the encoder's per-frame estimates.

    The encoder sees the target best when the hand is away from it: with the gripper at
    the target, part of the sphere is hidden (held-out p95 error 4.4 cm with the hand within
    5 cm of the target, 2.0 cm with it 15 cm or more away). The target of a reach does not
    move while the hand approaches it, so the goal

    * starts at the first estimate and jumps to any estimate more than
      ``jump_distance`` from it (a new or moved target: the hand-induced shifts are
      smaller than that),
    * is frozen while the hand is within ``freeze_radius`` of it,
    * otherwise follows the estimates with an exponential filter of weight ``smoothing``
      for the newest one (1 = no smoothing).

    Units: m, base frame.
    """

    smoothing: float = 0.5
    freeze_radius: float = 0.15
    jump_distance: float = 0.1

    def __post_init__(self) -> None:
        if not 0.0 < self.smoothing <= 1.0:
            raise ValueError(f"GoalFilter.smoothing must be in (0, 1], got {self.smoothing}")
        if self.freeze_radius < 0.0 or self.jump_distance <= 0.0:
            raise ValueError("GoalFilter: freeze_radius must be >= 0 m and jump_distance > 0 m")
        self._goal: np.ndarray | None = None

    @property
    def goal(self) -> np.ndarray | None:
        return None if self._goal is None else self._goal.copy()

    def reset(self) -> None:
        self._goal = None

    def update(self, estimate: np.ndarray, hand: np.ndarray) -> np.ndarray:
        """Fold in one estimate (3,) given the hand position (3,); returns the goal (3,)."""
        estimate = np.asarray(estimate, np.float64)
        goal = self._goal
        if goal is None or np.linalg.norm(estimate - goal) > self.jump_distance:
            self._goal = estimate.copy()
        elif np.linalg.norm(np.asarray(hand) - goal) >= self.freeze_radius:
            goal += self.smoothing * (estimate - goal)
        return self._goal.copy()


@dataclass(frozen=True)
class PolicyConfig:
    """Run-time settings of the policy.

    Attributes:
        action_scale: joint-target residual per unit action, rad (training used 0.15).
        history_length: rows in the history window (fixed by the model; read from manifest).
        uses_history: False for the memoryless ablation (the history input is then ignored
            by the model, but the input still exists when the ONNX graph declares it).
    """

    action_scale: float = DEFAULT_ACTION_SCALE
    history_length: int = DEFAULT_HISTORY_LENGTH
    uses_history: bool = True

    def __post_init__(self) -> None:
        if not (0.0 < self.action_scale <= 1.0):
            raise ValueError(f"PolicyConfig.action_scale must be in (0, 1] rad, got "
                             f"{self.action_scale}")
        if self.history_length < 1:
            raise ValueError(f"PolicyConfig.history_length must be >= 1, got "
                             f"{self.history_length}")


@dataclass
class PolicyOutput:
    """One policy decision.

    Attributes:
        action: raw action in [-1, 1]^7.
        targets: absolute joint targets, rad.
        latent: inferred dynamics latent (empty for the ablation).
        inference_time: wall time of the model call, s.
    """

    action: np.ndarray
    targets: np.ndarray
    latent: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    inference_time: float = 0.0


class PolicyStep:
    """Feature building + history bookkeeping around any ``infer(obs, history)`` callable.

    ``infer`` takes ``observation`` [1, D_obs] and ``history`` [1, H, D_h] float32 arrays and
    returns ``(action [1, 7], latent [1, Z])``. Used by the ONNX runtime, by evaluation of the
    torch models and by the expert data collection, so every path builds features the same way.
    """

    def __init__(self, infer: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
                 hand: HandFunction, config: PolicyConfig) -> None:
        self._infer = infer
        self._hand = hand
        self.config = config
        self.history = HistoryBuffer(config.history_length)
        self._obs = np.zeros((1, OBSERVATION_DIM), np.float32)

    def reset(self) -> None:
        self.history.reset()

    def hand(self, q: np.ndarray) -> np.ndarray:
        """Grasp-point position (3,), m, base frame, for joint positions ``q``."""
        return self._hand(q)

    def set_action_scale(self, action_scale: float) -> None:
        self.config = PolicyConfig(action_scale, self.config.history_length,
                                   self.config.uses_history)

    def features(self, q: np.ndarray, qd: np.ndarray, target: np.ndarray,
                 hand: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Push the state and build (observation [1, D_obs], history [1, H, D_h]).

        ``hand``: the grasp point at ``q`` when the caller already has it (:meth:`hand`).
        """
        window = self.history.push(q, qd)
        hand = self._hand(q) if hand is None else hand
        build_observation(q, qd, target, hand, self._obs[0])
        return self._obs, window[None]

    def __call__(self, q: np.ndarray, qd: np.ndarray, target: np.ndarray,
                 hand: np.ndarray | None = None) -> PolicyOutput:
        """Decide the next joint targets from the state measured now and the target estimate
        (``hand`` as in :meth:`features`)."""
        obs, history = self.features(q, qd, target, hand)
        start = time.perf_counter()
        action, latent = self._infer(obs, history)
        elapsed = time.perf_counter() - start
        action = np.clip(np.asarray(action, np.float64).reshape(N_JOINTS), -1.0, 1.0)
        commanded = action * self.config.action_scale
        self.history.record_command(commanded)
        return PolicyOutput(action=action, targets=np.asarray(q, np.float64) + commanded,
                            latent=np.asarray(latent, np.float32).reshape(-1),
                            inference_time=elapsed)


class PolicyRuntime(PolicyStep):
    """The exported policy run by ONNX Runtime (no torch), with output checks.

    Args:
        session: an ``onnxruntime.InferenceSession``-like object (``run(names, feeds)``)
            with inputs ``observation`` and ``history`` and outputs ``action`` and
            ``dynamics_latent``.
        hand: grasp-point function (see :func:`model_hand_function`).
        config: run-time settings.
    """

    INPUTS = ("observation", "history")
    OUTPUTS = ("action", "dynamics_latent")

    def __init__(self, session, hand: HandFunction, config: PolicyConfig) -> None:
        names = [i.name for i in session.get_inputs()]
        if "observation" not in names or not set(names) <= set(self.INPUTS):
            raise ValueError(f"policy model inputs must be 'observation' and optionally "
                             f"'history', got {names}")
        outputs = [o.name for o in session.get_outputs()]
        if "action" not in outputs:
            raise ValueError(f"policy model lacks output 'action' (has {outputs})")
        self._session = session
        # A memoryless export may have no 'history' input (the exporter drops unused inputs).
        self._feeds_history = "history" in names
        self._outputs = [n for n in self.OUTPUTS if n in outputs]
        self._no_latent = np.zeros((1, 0), np.float32)
        super().__init__(self._run, hand, config)

    @property
    def uses_history(self) -> bool:
        return self._feeds_history

    def _run(self, obs: np.ndarray, history: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        feeds = {"observation": obs, "history": history} if self._feeds_history \
            else {"observation": obs}
        results = self._session.run(self._outputs, feeds)
        action = results[0]
        latent = results[1] if len(results) > 1 else self._no_latent
        if action.shape != (1, N_JOINTS) or not np.all(np.isfinite(action)):
            raise FloatingPointError(f"policy output 'action' invalid: shape {action.shape}, "
                                     f"finite={bool(np.all(np.isfinite(action)))}")
        return action, latent


def load_policy_runtime(manifest_path, name: str, hand: HandFunction,
                        session_config=None, model_path=None,
                        action_scale: float | None = None, log=None) -> PolicyRuntime:
    """Verify ``name`` in the manifest (SHA-256), open an ONNX Runtime session, wrap it.

    History length and the default action scale come from the manifest entry's ``policy``
    record. Raises ``visuomotor_core.manifest.ManifestError`` for a missing or mismatching
    file.
    """
    from visuomotor_core.manifest import ManifestError, load_model_spec
    from visuomotor_core.onnx_session import SessionConfig, create_session

    spec = load_model_spec(manifest_path, name, model_path)
    record = spec.entry.get("policy")
    if not isinstance(record, dict) or "history_length" not in record:
        raise ManifestError(f"manifest entry '{name}' lacks the 'policy' record "
                            f"(history_length, action_scale, ...)")
    config = PolicyConfig(
        action_scale=float(action_scale if action_scale is not None
                           else record.get("action_scale", DEFAULT_ACTION_SCALE)),
        history_length=int(record["history_length"]),
        uses_history=bool(record.get("uses_history", True)))
    session, _ = create_session(spec.path, session_config or SessionConfig(), name, log)
    return PolicyRuntime(session, hand, config)
