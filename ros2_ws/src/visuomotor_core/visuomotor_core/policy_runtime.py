"""Dynamics-aware policy at run time: the policy step and its ONNX Runtime session.

A policy step composes the parts, each in its own module, around one network call:

1. :meth:`PolicyStep.features` pushes the measured state into the history window, the sag
   estimate and the goal integral, and builds the network's inputs (feature layout and
   builders: :mod:`visuomotor_core.policy_features`; sag estimator:
   :mod:`visuomotor_core.sag_estimator`; goal integrator: :mod:`visuomotor_core.goal_filter`);
2. the network (:class:`PolicyRuntime`: the exported ONNX model; training and evaluation pass
   their torch models as the ``infer`` callable);
3. :meth:`PolicyStep.compose` adds the sag feed-forward to the network's action: ``action =
   clip(net + sag_offset / action_scale, -1, 1)``;
4. :meth:`PolicyStep.commit` records what was executed: the history gets the network's part
   of the command (``commanded = action * action_scale - sag_offset``), so its features keep
   the ranges seen in training when the dynamics leave them; the sag estimator gets the
   absolute joint targets ``q + action * action_scale`` (rad).

:func:`load_policy_runtime` builds a :class:`PolicyRuntime` from a manifest entry, checking
the entry against the ONNX graph (:func:`check_policy_graph`) and the deployment.

The names the parts' modules define that callers imported from here before the parts moved
out (the feature layout and builders of ``policy_features``; ``SagEstimator``,
``SagEstimatorConfig``, ``PAYLOAD_COM`` and ``gains_mismatch`` of ``sag_estimator``;
``GoalFilter``, ``GoalIntegrator`` and ``GoalIntegratorConfig`` of ``goal_filter``) are
importable from here as well; new code imports them from their own modules.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from visuomotor_core.goal_filter import GoalFilter, GoalIntegrator, GoalIntegratorConfig
from visuomotor_core.policy_features import (
    DEFAULT_ACTION_SCALE,
    DEFAULT_HISTORY_LENGTH,
    HISTORY_DIM,
    HISTORY_FIELDS,
    N_JOINTS,
    OBSERVATION_DIM,
    OBSERVATION_FIELDS,
    HandFunction,
    HistoryBuffer,
    action_to_targets,
    build_history_row,
    build_observation,
    layout_description,
    model_hand_function,
)
from visuomotor_core.sag_estimator import (
    PAYLOAD_COM,
    SagEstimator,
    SagEstimatorConfig,
    gains_mismatch,
)

__all__ = [
    "DEFAULT_ACTION_SCALE",
    "DEFAULT_HISTORY_LENGTH",
    "HISTORY_DIM",
    "HISTORY_FIELDS",
    "N_JOINTS",
    "OBSERVATION_DIM",
    "OBSERVATION_FIELDS",
    "PAYLOAD_COM",
    "GoalFilter",
    "GoalIntegrator",
    "GoalIntegratorConfig",
    "HandFunction",
    "HistoryBuffer",
    "PolicyConfig",
    "PolicyOutput",
    "PolicyRuntime",
    "PolicyStep",
    "SagEstimator",
    "SagEstimatorConfig",
    "action_to_targets",
    "build_history_row",
    "build_observation",
    "check_policy_graph",
    "gains_mismatch",
    "layout_description",
    "load_policy_runtime",
    "model_hand_function",
]


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

    def act_on_estimate(self, q: np.ndarray, qd: np.ndarray, estimate: np.ndarray,
                        goal_filter: GoalFilter,
                        confidence: float = 1.0) -> tuple[np.ndarray, PolicyOutput]:
        """The policy on the goal ``goal_filter`` keeps from a target ``estimate`` (m) of
        the given ``confidence``: the one path of the graph's policy node and of the
        evaluations. Returns (goal (3,), output)."""
        hand = self.hand(q)
        goal = goal_filter.update(estimate, hand, confidence)
        return goal, self(q, qd, goal, hand)

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
