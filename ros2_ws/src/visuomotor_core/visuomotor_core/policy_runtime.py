"""Dynamics-aware policy at run time: feature builders, state/action history, ONNX inference.

The policy maps what the encoder saw (the target position estimate; the encoder's
``embedding`` is *not* an input of this policy) plus proprioception and a window of recent
states and actions to a joint-target residual. Training (``visuomotor_models``) and every
runtime build their inputs with the functions of this module, so features are identical.

Feature layout (all float32, SI units, the robot description's base frame):

``observation`` [D_obs = 23]
    ``q`` (7, rad) | ``qd`` (7, rad/s) | ``target`` (3, m) | ``hand`` (3, m, grasp point by
    forward kinematics of ``q``) | ``target - hand`` (3, m)

``history`` [H, D_h = 28], rows oldest -> newest, one row per policy step
    ``q`` (7, rad) | ``qd`` (7, rad/s) | ``commanded`` (7, rad: the network's part of the
    joint-target residual applied at the previous step, i.e. without the sag offset) |
    ``shortfall`` (7, rad: commanded displacement minus achieved displacement
    ``q_t - q_{t-1}``; its steady value is the sag that the offset has not yet removed).

The previous action is deliberately *not* part of ``observation``: it is one step of memory,
and the no-history ablation must be memoryless. It reaches the policy through ``history``.

Action: the network's ``action`` in [-1, 1]^7; joint targets ``q_target = q + clip(action +
sag_offset / action_scale, -1, 1) * action_scale`` (rad), ``sag_offset`` = 0 without a sag
estimator.

Sag feed-forward (dynamics-aware models only): the joint controller compensates gravity with
the *nominal* model, so a heavier arm, a payload or weaker actuators leave a steady joint
offset ("sag"). That offset is linear in two dynamics parameters with bases the robot model
computes (see :class:`SagEstimator`), so it is identified from the history by least squares
and added to the network's action: ``action = clip(net + sag_offset / action_scale, -1, 1)``.
The history then records the network's part of the command (``commanded = action *
action_scale - sag_offset``), so its features keep the ranges seen in training when the
dynamics leave them. A learned latent cannot extrapolate beyond the trained dynamics; this
linear estimate does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace

import numpy as np

from visuomotor_core.robot_description import load_robot

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
PAYLOAD_COM = (0.0, 0.0, 0.04)  # m, the payload's centre of mass in the tool link's frame

HandFunction = Callable[[np.ndarray], np.ndarray]
"""Maps joint positions q (7,) rad to the grasp-point position (3,) m, base frame."""


def layout_description() -> dict:
    """The feature layout as plain data (stored in the model manifest); the frame is the
    default robot's base frame."""
    return {
        "observation": [{"name": n, "size": s} for n, s in OBSERVATION_FIELDS],
        "history": [{"name": n, "size": s} for n, s in HISTORY_FIELDS],
        "history_order": "oldest_to_newest",
        "action": "q_target = q + clip(action + sag_offset / action_scale, -1, 1) * "
                  "action_scale (rad); sag_offset from the sag estimator (zero without one)",
        "frame": load_robot().base_frame,
        "embedding_used": False,
    }


def model_hand_function(model, link: str | None = None) -> HandFunction:
    """Grasp-point position from a :class:`visuomotor_core.robot_model.RobotModel` (FK);
    ``link`` defaults to the default robot description's grasp link."""
    link = link or load_robot().grasp_link

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

    Each estimate comes with the encoder's confidence in [0, 1] (low when the target's
    keypoints are hidden, when the camera pose could not be refined on the scene landmarks,
    or when the estimate lies outside the target workspace). The encoder also sees the
    target worse when the hand is near it and hides part of it. The target of a reach does
    not move while the hand approaches it, so the goal

    * starts at the first estimate, confident or not (so the policy can act); a goal taken
      from an estimate below ``min_confidence`` is replaced by the first confident one;
    * ignores estimates below ``min_confidence`` after that;
    * jumps to any confident estimate more than ``jump_distance`` from it (a new or moved
      target: the hand-induced shifts are smaller than that);
    * is frozen while the hand is within ``freeze_radius`` of it;
    * otherwise follows confident estimates with an exponential filter whose weight for the
      newest one is ``smoothing * confidence`` (``smoothing`` 1 and full confidence: no
      smoothing).

    Units: m, base frame.
    """

    smoothing: float = 0.3
    freeze_radius: float = 0.15
    jump_distance: float = 0.1
    min_confidence: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 < self.smoothing <= 1.0:
            raise ValueError(f"GoalFilter.smoothing must be in (0, 1], got {self.smoothing}")
        if self.freeze_radius < 0.0 or self.jump_distance <= 0.0:
            raise ValueError("GoalFilter: freeze_radius must be >= 0 m and jump_distance > 0 m")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ValueError(f"GoalFilter.min_confidence must be in [0, 1], got "
                             f"{self.min_confidence}")
        self._goal: np.ndarray | None = None
        self._provisional = False  # the goal came from an estimate below min_confidence

    @property
    def goal(self) -> np.ndarray | None:
        return None if self._goal is None else self._goal.copy()

    def reset(self) -> None:
        self._goal = None
        self._provisional = False

    def update(self, estimate: np.ndarray, hand: np.ndarray,
               confidence: float = 1.0) -> np.ndarray:
        """Fold in one estimate (3,) with its confidence in [0, 1] (values outside are
        clipped, NaN counts as 0) given the hand position (3,); returns the goal (3,).

        Raises:
            ValueError: a non-finite estimate while there is no goal yet (one with a goal
                is ignored).
        """
        estimate = np.asarray(estimate, np.float64)
        confidence = float(np.clip(np.nan_to_num(confidence, nan=0.0), 0.0, 1.0))
        finite = bool(np.all(np.isfinite(estimate)))
        confident = finite and confidence >= self.min_confidence
        goal = self._goal
        if goal is None:
            if not finite:
                raise ValueError(f"GoalFilter: non-finite estimate {estimate.tolist()}")
            self._goal, self._provisional = estimate.copy(), not confident
        elif not confident:
            pass
        elif self._provisional or np.linalg.norm(estimate - goal) > self.jump_distance:
            self._goal, self._provisional = estimate.copy(), False
        elif np.linalg.norm(np.asarray(hand) - goal) >= self.freeze_radius:
            goal += self.smoothing * confidence * (estimate - goal)
        return self._goal.copy()


def _config_from_dict(cls, record: dict, what: str):
    """A frozen settings dataclass from its manifest record (lists become tuples of floats);
    ValueError for a key the dataclass does not have."""
    unknown = set(record) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(f"unknown {what} settings {sorted(unknown)}")
    return cls(**{k: tuple(float(x) for x in v) if isinstance(v, list | tuple) else v
                  for k, v in record.items()})


@dataclass(frozen=True)
class SagEstimatorConfig:
    """Settings of :class:`SagEstimator`.

    Attributes:
        kp: joint controller stiffness the sag is measured against, N·m/rad (7,); the
            training controller's gains (recorded in the policy manifest); default: the
            robot description's.
        motion_scale, speed_scale: a sample's weight is ``exp(-min(|q_t - q_{t-1}|^2 /
            motion_scale^2, |qd_t|^2 / speed_scale^2))``, so the estimate comes from (nearly)
            still moments, where the tracking error is the sag and not the lag of a moving
            arm. Still means either a small displacement since the previous policy step (rad;
            an arm ringing about a still mean under a long actuation delay) or a small measured
            velocity (rad/s; an arm that settles at the end of each step while creeping).
        ridge: Tikhonov prior pulling the parameters to the nominal model (0, 0).
        forgetting: per-step decay of old samples in (0, 1]; 1 keeps the whole episode (call
            ``reset`` / ``policy/reset`` on a new payload); below 1 the estimate follows a
            change by itself, less exactly (the ridge prior keeps more weight).
        max_offset: bound on each joint's feed-forward offset, rad.
        max_error: a sample whose tracking error exceeds this on any joint (rad) is skipped:
            the arm was moved by something else (an episode reset, a collision, a hand
            guiding it), and one such sample would outweigh many true ones.
        theta_low, theta_high: physical bounds of the parameters ``(link_mass_scale /
            strength - 1, payload / strength)``: no negative payload, links between half and
            four times their nominal weight per unit strength. At one posture the two bases
            are nearly parallel, so without bounds the fit can trade a negative payload for
            heavy links: the same sag where the arm stands, a wrong one elsewhere.
    """

    kp: tuple[float, ...] = field(default_factory=lambda: load_robot().kp)
    motion_scale: float = 0.0075
    speed_scale: float = 0.15
    ridge: float = 1e-4
    forgetting: float = 1.0
    max_offset: float = 0.15
    max_error: float = 0.3
    theta_low: tuple[float, float] = (-0.5, 0.0)
    theta_high: tuple[float, float] = (3.0, 10.0)

    def __post_init__(self) -> None:
        if len(self.kp) != N_JOINTS or not all(np.isfinite(self.kp)) or min(self.kp) <= 0.0:
            raise ValueError(f"SagEstimatorConfig.kp must be {N_JOINTS} positive gains, "
                             f"got {self.kp}")
        if min(self.motion_scale, self.speed_scale, self.ridge, self.max_offset,
               self.max_error) <= 0.0:
            raise ValueError("SagEstimatorConfig: motion_scale, speed_scale, ridge, max_offset "
                             "and max_error must be > 0")
        if not 0.0 < self.forgetting <= 1.0:
            raise ValueError(f"SagEstimatorConfig.forgetting must be in (0, 1], got "
                             f"{self.forgetting}")
        low, high = np.asarray(self.theta_low, float), np.asarray(self.theta_high, float)
        if low.shape != (2,) or high.shape != (2,) or not np.all(low <= 0.0) \
                or not np.all(high > low):
            raise ValueError(f"SagEstimatorConfig: theta_low {self.theta_low} and theta_high "
                             f"{self.theta_high} must be 2 bounds each with low <= 0 < high")

    @classmethod
    def from_dict(cls, record: dict) -> SagEstimatorConfig:
        return _config_from_dict(cls, record, "sag estimator")


class SagEstimator:
    """Least-squares estimate of the gravity sag from the tracking error of the history.

    The controller applies ``strength * (kp * (q_target - q) - kd * qd + g_nom(q))`` with the
    nominal model's gravity ``g_nom``. When the link masses are ``link_mass_scale`` times
    nominal, a payload ``m`` sits at the hand and the actuators deliver ``strength`` of the
    command, the arm at rest settles at ``q_target - q = B(q) @ theta`` with the bases

    * ``B[:, 0] = g_nom(q) / kp`` and
    * ``B[:, 1] = (g(q; 1 kg at the hand) - g_nom(q)) / kp``

    and the parameters ``theta = (link_mass_scale / strength - 1, m / strength)``. Each policy
    step adds the measured tracking error ``q_target_prev - q`` against ``B(q)`` to a
    least-squares fit weighted toward still samples (see :class:`SagEstimatorConfig`), and
    :meth:`offset` returns ``B(q) @ theta_hat``, the joint offset to add to the next target.
    The fit is linear, so it holds for any payload and strength, inside the training
    ranges or not. Units: rad, rad/s, N·m.

    Args:
        model: a :class:`visuomotor_core.robot_model.RobotModel` of the arm (nominal masses).
        config: settings.
        payload_link: the link carrying the payload; default: the default robot
            description's tool frame.
    """

    N_PARAMETERS = 2

    def __init__(self, model, config: SagEstimatorConfig | None = None,
                 payload_link: str | None = None) -> None:
        from visuomotor_core.robot_model import Payload

        self.config = config or SagEstimatorConfig()
        self._model = model
        self._unit_payload = Payload(1.0, PAYLOAD_COM, payload_link or load_robot().tool_frame)
        #: The stiffness the estimator was built with (a model's: the gains it was trained
        #: with), N·m/rad; :meth:`set_kp` changes the one in use, not this.
        self.trained_kp: tuple[float, ...] = self.config.kp
        self._inv_kp = 1.0 / np.asarray(self.config.kp, np.float64)
        self._low = np.asarray(self.config.theta_low, np.float64)
        self._high = np.asarray(self.config.theta_high, np.float64)
        self._prior = self.config.ridge * np.eye(self.N_PARAMETERS)
        self._gram = self._prior.copy()
        self._moment = np.zeros(self.N_PARAMETERS)
        self._theta = np.zeros(self.N_PARAMETERS)
        self._bases = np.zeros((N_JOINTS, self.N_PARAMETERS))
        self._nominal = np.zeros(N_JOINTS)
        self._loaded = np.zeros(N_JOINTS)
        self._last_target: np.ndarray | None = None
        self._last_q: np.ndarray | None = None

    @property
    def theta(self) -> np.ndarray:
        """``(link_mass_scale / strength - 1, payload_mass / strength)`` estimated (kg for the
        second)."""
        return self._theta.copy()

    @property
    def kp(self) -> tuple[float, ...]:
        """The controller stiffness the sag is computed against, N·m/rad."""
        return self.config.kp

    def set_kp(self, kp) -> None:
        """Compute the sag against the controller's new stiffness ``kp`` (N·m/rad, one per
        joint; ValueError otherwise). The estimated parameters are the arm's dynamics, not
        the gains', so the fit is kept."""
        config = replace(self.config, kp=tuple(float(k) for k in kp))
        self._inv_kp = 1.0 / np.asarray(config.kp, np.float64)
        self.config = config

    def reset(self) -> None:
        """Forget all samples (a new episode, a new payload)."""
        self._gram[:] = self._prior
        self._moment.fill(0.0)
        self._theta.fill(0.0)
        self._last_target = None
        self._last_q = None

    def bases(self, q: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """``B(q)`` (7, 2), rad per unit parameter (see the class docstring)."""
        bases = np.empty((N_JOINTS, self.N_PARAMETERS)) if out is None else out
        nominal = self._model.gravity_torques(q, out=self._nominal)
        loaded = self._model.gravity_torques(q, self._unit_payload, out=self._loaded)
        np.multiply(nominal, self._inv_kp, out=bases[:, 0])
        np.subtract(loaded, nominal, out=bases[:, 1])
        bases[:, 1] *= self._inv_kp
        return bases

    def update(self, q: np.ndarray, qd: np.ndarray) -> np.ndarray:
        """Fold in the joint state measured now (rad, rad/s) against the last recorded
        target; returns the offset (7,), rad, for ``q``."""
        cfg = self.config
        q = np.asarray(q, np.float64)
        bases = self.bases(q, self._bases)
        if self._last_target is not None and self._last_q is not None:
            error = self._last_target - q
            if np.all(np.abs(error) <= cfg.max_error) and np.all(np.isfinite(qd)):
                moved = q - self._last_q
                weight = float(np.exp(-min(np.dot(moved, moved) / cfg.motion_scale ** 2,
                                           np.dot(qd, qd) / cfg.speed_scale ** 2)))
                if cfg.forgetting < 1.0:
                    self._gram *= cfg.forgetting
                    self._gram += (1.0 - cfg.forgetting) * self._prior
                    self._moment *= cfg.forgetting
                self._gram += weight * (bases.T @ bases)
                self._moment += weight * (bases.T @ error)
                self._theta[:] = self._bounded_fit()
        self._last_q = q.copy()
        return self.offset()

    def _bounded_fit(self) -> np.ndarray:
        """``argmin 0.5 t^T G t - m^T t`` over the box [theta_low, theta_high] (convex, 2-D:
        the free minimum if inside, else the best edge minimum)."""
        gram, moment = self._gram, self._moment
        low, high = self._low, self._high
        theta = np.linalg.solve(gram, moment)
        if np.all(theta >= low) and np.all(theta <= high):
            return theta
        best, best_cost = theta, np.inf
        for i, j in ((0, 1), (1, 0)):
            for value in (low[i], high[i]):
                edge = np.empty(2)
                edge[i] = value
                edge[j] = np.clip((moment[j] - gram[j, i] * value) / gram[j, j], low[j],
                                  high[j])
                cost = 0.5 * edge @ gram @ edge - moment @ edge
                if cost < best_cost:
                    best, best_cost = edge, cost
        return best

    def offset(self) -> np.ndarray:
        """Feed-forward joint offset (7,), rad, at the ``q`` of the latest :meth:`update`,
        each joint bounded by ``max_offset``."""
        bound = self.config.max_offset
        return np.clip(self._bases @ self._theta, -bound, bound)

    def record_target(self, q_target: np.ndarray) -> None:
        """The absolute joint target (rad) sent after the latest :meth:`update`."""
        self._last_target = np.array(q_target, np.float64)


@dataclass(frozen=True)
class GoalIntegratorConfig:
    """Settings of :class:`GoalIntegrator`.

    Attributes:
        gain: fraction of the remaining hand-to-goal error added to the integral per step.
        radius: the integral runs only with the hand this close to the goal, m.
        limit: bound on the integral's length, m.
        still_displacement: it runs only while the arm moved less than this since the
            previous policy step (largest joint, rad): at rest, not on the way.
    """

    gain: float = 0.1
    radius: float = 0.05
    limit: float = 0.04
    still_displacement: float = 0.015

    def __post_init__(self) -> None:
        if not 0.0 < self.gain <= 1.0:
            raise ValueError(f"GoalIntegratorConfig.gain must be in (0, 1], got {self.gain}")
        if min(self.radius, self.limit, self.still_displacement) <= 0.0:
            raise ValueError("GoalIntegratorConfig: radius, limit and still_displacement must "
                             "be > 0")

    @classmethod
    def from_dict(cls, record: dict) -> GoalIntegratorConfig:
        return _config_from_dict(cls, record, "goal integrator")


class GoalIntegrator:
    """Integral action on the goal the network aims at: ``goal + integral``.

    A dynamics-aware model's remaining steady error (friction, the part of the sag the
    estimate misses, the network's own bias near the goal) is removed by shifting the goal it
    is given: while the hand rests within ``radius`` of the goal, ``integral += gain * (goal -
    hand)``, bounded to ``limit``. A goal that moves by more than ``radius`` (a new target)
    clears it. Memory, so only models with a history use it. Units: m, rad, base frame.
    """

    def __init__(self, config: GoalIntegratorConfig | None = None) -> None:
        self.config = config or GoalIntegratorConfig()
        self._integral = np.zeros(3)
        self._goal: np.ndarray | None = None
        self._q: np.ndarray | None = None

    @property
    def integral(self) -> np.ndarray:
        """The goal shift now, m."""
        return self._integral.copy()

    def reset(self) -> None:
        self._integral.fill(0.0)
        self._goal = self._q = None

    def update(self, goal: np.ndarray, hand: np.ndarray, q: np.ndarray) -> np.ndarray:
        """Fold in the goal and grasp point (m) at joint positions ``q`` (rad); returns the
        shifted goal (3,), m."""
        cfg = self.config
        goal = np.asarray(goal, np.float64)
        error = goal - np.asarray(hand, np.float64)
        if self._goal is not None and np.linalg.norm(goal - self._goal) > cfg.radius:
            self._integral.fill(0.0)
        still = self._q is not None and \
            float(np.max(np.abs(np.asarray(q) - self._q))) < cfg.still_displacement
        if still and np.linalg.norm(error) < cfg.radius:
            self._integral += cfg.gain * error
            length = float(np.linalg.norm(self._integral))
            if length > cfg.limit:
                self._integral *= cfg.limit / length
        self._goal = goal.copy()
        self._q = np.array(q, np.float64)
        return goal + self._integral


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
        action: action in [-1, 1]^7 (the network's plus the sag feed-forward).
        targets: absolute joint targets, rad.
        latent: inferred dynamics latent (empty for the ablation).
        inference_time: wall time of the model call, s.
        sag_offset: the feed-forward joint offset included in ``targets``, rad (zeros
            without a :class:`SagEstimator`).
    """

    action: np.ndarray
    targets: np.ndarray
    latent: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    inference_time: float = 0.0
    sag_offset: np.ndarray = field(default_factory=lambda: np.zeros(N_JOINTS))


class PolicyStep:
    """Feature building + history bookkeeping around any ``infer(obs, history)`` callable.

    ``infer`` takes ``observation`` [1, D_obs] and ``history`` [1, H, D_h] float32 arrays and
    returns ``(action [1, 7], latent [1, Z])``. Used by the ONNX runtime, by evaluation of the
    torch models and by the expert data collection, so every path builds features the same way:
    :meth:`features` (push the state), the network, :meth:`compose` (add the sag
    feed-forward), :meth:`commit` (record what was executed).

    ``sag``, ``integrator``: the :class:`SagEstimator` and :class:`GoalIntegrator` of a
    dynamics-aware model, None for the ablation. ``sag_enabled`` / ``integrator_enabled``
    switch their effect off at run time (A/B on a robot); the estimate keeps running.
    """

    def __init__(self, infer: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
                 hand: HandFunction, config: PolicyConfig,
                 sag: SagEstimator | None = None,
                 integrator: GoalIntegrator | None = None) -> None:
        self._infer = infer
        self._hand = hand
        self.config = config
        self.sag = sag
        self.integrator = integrator
        self.sag_enabled = True
        self.integrator_enabled = True
        self.history = HistoryBuffer(config.history_length)
        self._obs = np.zeros((1, OBSERVATION_DIM), np.float32)
        self._offset = np.zeros(N_JOINTS)

    def reset(self) -> None:
        self.history.reset()
        if self.sag is not None:
            self.sag.reset()
        if self.integrator is not None:
            self.integrator.reset()
        self._offset.fill(0.0)

    def hand(self, q: np.ndarray) -> np.ndarray:
        """Grasp-point position (3,), m, base frame, for joint positions ``q``."""
        return self._hand(q)

    def set_action_scale(self, action_scale: float) -> None:
        self.config = PolicyConfig(action_scale, self.config.history_length,
                                   self.config.uses_history)

    @property
    def sag_offset(self) -> np.ndarray:
        """Feed-forward offset (7,), rad, for the state of the latest :meth:`features`."""
        return self._offset.copy()

    def features(self, q: np.ndarray, qd: np.ndarray, target: np.ndarray,
                 hand: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Push the state (history, sag estimate, goal integral) and build (observation
        [1, D_obs], history [1, H, D_h]).

        ``hand``: the grasp point at ``q`` when the caller already has it (:meth:`hand`).
        """
        window = self.history.push(q, qd)
        if self.sag is not None:
            offset = self.sag.update(q, qd)
            self._offset[:] = offset if self.sag_enabled else 0.0
        hand = self._hand(q) if hand is None else hand
        if self.integrator is not None:
            if self.integrator_enabled:
                target = self.integrator.update(target, hand, q)
            else:
                self.integrator.reset()
        build_observation(q, qd, target, hand, self._obs[0])
        return self._obs, window[None]

    def compose(self, network_action: np.ndarray) -> np.ndarray:
        """The action to execute: network action plus the sag feed-forward, clipped to
        [-1, 1]^7."""
        action = np.asarray(network_action, np.float64).reshape(N_JOINTS)
        return np.clip(action + self._offset / self.config.action_scale, -1.0, 1.0)

    def commit(self, q: np.ndarray, action: np.ndarray) -> np.ndarray:
        """Record the executed ``action`` (in [-1, 1]^7) for the state of the latest
        :meth:`features`; returns the absolute joint targets, rad."""
        commanded = np.clip(action, -1.0, 1.0) * self.config.action_scale
        self.history.record_command(commanded - self._offset)
        targets = np.asarray(q, np.float64) + commanded
        if self.sag is not None:
            self.sag.record_target(targets)
        return targets

    def __call__(self, q: np.ndarray, qd: np.ndarray, target: np.ndarray,
                 hand: np.ndarray | None = None) -> PolicyOutput:
        """Decide the next joint targets from the state measured now and the target estimate
        (``hand`` as in :meth:`features`)."""
        obs, history = self.features(q, qd, target, hand)
        start = time.perf_counter()
        network_action, latent = self._infer(obs, history)
        elapsed = time.perf_counter() - start
        action = self.compose(network_action)
        targets = self.commit(q, action)
        return PolicyOutput(action=action, targets=targets,
                            latent=np.asarray(latent, np.float32).reshape(-1),
                            inference_time=elapsed, sag_offset=self._offset.copy())


class PolicyRuntime(PolicyStep):
    """The exported policy run by ONNX Runtime (no torch), with output checks.

    Args:
        session: an ``onnxruntime.InferenceSession``-like object (``run(names, feeds)``)
            with inputs ``observation`` and ``history`` and outputs ``action`` and
            ``dynamics_latent``.
        hand: grasp-point function (see :func:`model_hand_function`).
        config: run-time settings.
        sag, integrator: the model's sag estimator and goal integrator (its manifest record
            says whether it has them).
    """

    INPUTS = ("observation", "history")
    OUTPUTS = ("action", "dynamics_latent")

    def __init__(self, session, hand: HandFunction, config: PolicyConfig,
                 sag: SagEstimator | None = None,
                 integrator: GoalIntegrator | None = None) -> None:
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
        super().__init__(self._run, hand, config, sag, integrator)

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


def gains_mismatch(trained: tuple[float, ...], controller, source: str,
                   rel_tol: float = 1e-6) -> str | None:
    """Why the controller's ``kp`` (from ``source``) differs from the ``kp`` the sag estimator
    was trained with, or None when they agree (within ``rel_tol``)."""
    live = np.asarray(controller, np.float64)
    recorded = np.asarray(trained, np.float64)
    if live.shape == recorded.shape and np.allclose(live, recorded, rtol=rel_tol, atol=0.0):
        return None
    return (f"controller kp {live.tolist()} ({source}) differs from the kp the policy's sag "
            f"estimator was trained with {recorded.tolist()} (manifest): the sag "
            f"feed-forward uses the controller's kp, but the policy saw only the trained "
            f"gains' tracking behaviour")


def load_policy_runtime(manifest_path, name: str, model, session_config=None,
                        model_path=None, action_scale: float | None = None,
                        log=None, robot: str | None = None,
                        camera_rate_hz: float | None = None,
                        control_rate_hz: float | None = None,
                        sources: dict[str, str] | None = None,
                        controller_kp=None, warn=None,
                        payload_link: str | None = None,
                        grasp_link: str | None = None) -> PolicyRuntime:
    """Verify ``name`` in the manifest, open an ONNX Runtime session, check the graph, wrap it.

    ``model``: the arm's :class:`visuomotor_core.robot_model.RobotModel` (grasp point by
    forward kinematics; gravity bases of the sag estimator). History length, the default
    action scale and the sag estimator's settings come from the manifest entry's ``policy``
    record. ``robot``, ``camera_rate_hz`` (the policy acts once per camera frame) and
    ``control_rate_hz`` (the joint controller's rate), when given, must equal what the
    model was trained for (the entry's ``robot``, ``policy.policy_rate_hz`` and
    ``policy.control_rate_hz``); ``sources`` maps those argument names to where the values
    come from (e.g. ``{"robot": "URDF <name>.urdf"}``), for the messages.
    ``controller_kp``, when given, is the stiffness the controller runs with (N·m/rad): the
    sag estimator computes against it, and ``warn`` (default: logging) is told when it
    differs from the kp recorded in the manifest's ``sag_estimator`` record (source:
    ``sources["controller_kp"]``). ``payload_link``/``grasp_link``: the robot description's
    tool frame and grasp link (default: the default robot's).

    Raises:
        visuomotor_core.manifest.ManifestError: a missing or mismatching file, an invalid
            record, or (``ModelContractError``) a manifest that disagrees with the ONNX
            graph (tensors, history length, feature sizes) or with the given robot/rates.
    """
    from visuomotor_core.manifest import (
        ManifestError,
        check_session_contract,
        load_model_spec,
    )
    from visuomotor_core.onnx_session import SessionConfig, create_session

    spec = load_model_spec(manifest_path, name, model_path)
    record = spec.entry.get("policy")
    required = ("history_length", "uses_history", "policy_rate_hz", "control_rate_hz")
    if not isinstance(record, dict) or any(k not in record for k in required):
        raise ManifestError(f"manifest entry '{name}' lacks the 'policy' record or one of "
                            f"its fields {list(required)}")
    sources = sources or {}
    if controller_kp is not None:
        kp = np.asarray(controller_kp, np.float64)
        if kp.shape != (N_JOINTS,) or not np.all(np.isfinite(kp)) or np.any(kp <= 0.0):
            raise ValueError(f"controller kp must be {N_JOINTS} positive gains (N·m/rad), got "
                             f"{list(controller_kp)} ({sources.get('controller_kp', 'runtime')})")
    if robot is not None:
        spec.check_robot(robot, sources.get("robot", "runtime"))
    if camera_rate_hz is not None:
        spec.check_rate("camera rate policy_rate_hz (Hz)", record["policy_rate_hz"],
                        camera_rate_hz, sources.get("camera_rate_hz", "runtime"))
    if control_rate_hz is not None:
        spec.check_rate("controller rate control_rate_hz (Hz)", record["control_rate_hz"],
                        control_rate_hz, sources.get("control_rate_hz", "runtime"))
    try:
        config = PolicyConfig(
            action_scale=float(action_scale if action_scale is not None
                               else record.get("action_scale", DEFAULT_ACTION_SCALE)),
            history_length=int(record["history_length"]),
            uses_history=bool(record["uses_history"]))
        sag = integrator = None
        if record.get("sag_estimator") is not None:
            sag = SagEstimator(model, SagEstimatorConfig.from_dict(record["sag_estimator"]),
                               payload_link)
            if controller_kp is not None:
                mismatch = gains_mismatch(sag.trained_kp, controller_kp,
                                          sources.get("controller_kp", "runtime"))
                if mismatch is not None:
                    (warn or logging.getLogger(__name__).warning)(f"{spec.label}: {mismatch}")
                    sag.set_kp(controller_kp)
        if record.get("goal_integrator") is not None:
            integrator = GoalIntegrator(GoalIntegratorConfig.from_dict(record["goal_integrator"]))
    except (AttributeError, TypeError, ValueError) as err:
        raise ManifestError(f"manifest entry '{name}': invalid policy record "
                            f"(history_length, action_scale, sag_estimator or "
                            f"goal_integrator): {err}") from err
    provider_line: list[str] = []  # logged once the graph has passed the checks
    session, _ = create_session(spec.path, session_config or SessionConfig(), name,
                                provider_line.append)
    check_session_contract(spec, session)
    check_policy_graph(spec, record, session)
    for line in provider_line:
        (log or logging.getLogger(__name__).info)(line)
    return PolicyRuntime(session, model_hand_function(model, grasp_link), config, sag,
                         integrator)


def check_policy_graph(spec, record: dict, session) -> None:
    """The ``policy`` record and this module's feature sizes against the ONNX graph.

    Raises:
        visuomotor_core.manifest.ModelContractError: naming the field and both values.
    """
    from visuomotor_core.manifest import ModelContractError, contract_error

    label = spec.label
    inputs = {a.name: list(a.shape) for a in session.get_inputs()}
    outputs = {a.name: list(a.shape) for a in session.get_outputs()}
    unknown = sorted(set(inputs) - set(PolicyRuntime.INPUTS))
    if "observation" not in inputs or unknown or "action" not in outputs:
        raise ModelContractError(f"{label}: graph inputs {sorted(inputs)} and outputs "
                                 f"{sorted(outputs)}; the runtime needs inputs 'observation' "
                                 f"(+ optional 'history') and output 'action'")
    if bool(record["uses_history"]) != ("history" in inputs):
        raise contract_error(label, "policy uses_history", bool(record["uses_history"]),
                             "history" in inputs, other="model has a 'history' input:")
    expected = [("observation", inputs["observation"], 1, OBSERVATION_DIM, "runtime builds"),
                ("action", outputs["action"], 1, N_JOINTS, "runtime needs")]
    if "history" in inputs:
        shape = inputs["history"]
        if len(shape) != 3:
            raise contract_error(label, "input 'history' shape", shape,
                                 ["batch", record["history_length"], HISTORY_DIM],
                                 other="runtime needs", first="model")
        if shape[1] != record["history_length"]:
            raise contract_error(label, "policy history_length", record["history_length"],
                                 shape[1])
        expected.append(("history", shape, 2, HISTORY_DIM, "runtime builds"))
    if "dynamics_latent" in outputs:
        expected.append(("dynamics_latent", outputs["dynamics_latent"], 1,
                         record.get("latent_dim"), "manifest latent_dim"))
    for tensor, shape, axis, size, side in expected:
        actual = shape[axis] if len(shape) == axis + 1 else shape
        if actual != size:
            raise contract_error(label, f"'{tensor}' axis {axis} size", actual, size,
                                 other=side, first="model")
