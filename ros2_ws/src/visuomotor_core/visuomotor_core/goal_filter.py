"""The goal the policy acts on: filtered from the encoder's estimates, shifted by integral action.

* :class:`GoalFilter` keeps the target position from the encoder's per-frame estimates,
  weighted by their confidence (frozen near the hand, jumping to a moved target). The policy
  node runs it on every features message.
* :class:`GoalIntegrator` shifts the goal given to a dynamics-aware model by the integral
  of the remaining hand-to-goal error while the hand rests near it
  (:class:`visuomotor_core.policy_runtime.PolicyStep` runs it on every policy step of a
  model whose manifest record has one).

Units: m (positions, base frame), rad (joint positions).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from visuomotor_core.manifest import settings_from_record


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
        return settings_from_record(cls, record, "goal integrator")


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
