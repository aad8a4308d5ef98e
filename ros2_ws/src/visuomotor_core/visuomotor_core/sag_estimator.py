"""Sag feed-forward: bounded least-squares identification of the gravity sag.

The joint controller compensates gravity with the *nominal* model, so a heavier arm, a
payload or weaker actuators leave a steady joint offset ("sag"). That offset is linear in two
dynamics parameters with bases the robot model computes (see :class:`SagEstimator`), so it
is identified from the tracking error of the policy steps by least squares, bounded to
physical values, and added to the network's action (by
:class:`visuomotor_core.policy_runtime.PolicyStep`): ``action = clip(net + sag_offset /
action_scale, -1, 1)``. A learned latent cannot extrapolate beyond the trained dynamics;
this linear estimate does.

The estimate is computed against the controller's stiffness ``kp``; :func:`gains_mismatch`
says when the controller's differs from the one a model was trained with.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from visuomotor_core.manifest import settings_from_record
from visuomotor_core.policy_features import N_JOINTS
from visuomotor_core.robot_description import load_robot

PAYLOAD_COM = (0.0, 0.0, 0.04)  # m, the payload's centre of mass in the tool link's frame


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
        return settings_from_record(cls, record, "sag estimator")


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
