"""The policy's inputs and action: feature layout, feature builders, state/action history.

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
estimator (:mod:`visuomotor_core.sag_estimator`; composed in
:class:`visuomotor_core.policy_runtime.PolicyStep`).
"""

from __future__ import annotations

from collections.abc import Callable

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
