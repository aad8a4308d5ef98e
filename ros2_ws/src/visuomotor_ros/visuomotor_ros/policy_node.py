"""Policy node: encoder features + joint states -> joint targets, once per camera frame.

Subscribes ``encoder/features`` (visuomotor_interfaces/EncoderFeatures) and ``joint_states``;
on every accepted features message it runs the dynamics-aware policy
(:class:`visuomotor_core.policy_runtime.PolicyRuntime`, ONNX Runtime, no torch) and publishes

* ``policy/joint_targets`` (visuomotor_interfaces/JointTargets): header.stamp = the camera
  stamp of the features, absolute joint targets (rad), the inferred dynamics latent and the
  inference time;
* ``policy/goal`` (geometry_msgs/PointStamped): the goal, the filtered target estimate (the
  network aims at it plus the goal integral, reported on ``/diagnostics``);
* ``/diagnostics``: rate, inference latency p50/p99, refused features and, for a
  dynamics-aware model, the identified sag parameters (``sag_link_mass_ratio`` = link mass
  scale / actuator strength, ``sag_payload_kg`` = payload / strength) and the largest joint
  offset they add (``sag_offset_max_rad``), and the goal integral's length
  (``goal_integral_m``).

``policy/reset`` (std_srvs/Trigger) clears the history, the sag estimate, the goal integral
and the goal: call it when a new task starts or the payload changes (the demo calls it after
every episode reset), so the estimate does not mix samples of two situations.

Features older than ``max_feature_age`` (by header stamp) or as far in the future, with a
non-finite target or one farther than ``MAX_TARGET_RANGE`` from the base, or with a target
frame other than ``base_frame`` are refused and counted.
A joint state is refused (and the last one forgotten, so no features are acted on until a
good one arrives) when a joint is missing or named twice, ``position`` or ``velocity`` do
not have one entry per name, its stamp is more than ``max_state_age`` old or ahead, or an
arm joint's value is not finite or physically impossible (see ``STATE_POSITION_MARGIN``).
Every refusal logs a throttled warning. Joint states are read, not handled one by one: the
newest is taken and checked when a features message arrives, and every
``_STATE_POLL_PERIOD`` in between, from a depth-1 subscription on a helper node
(``<node name>_joint_states``) that no executor spins
(:class:`visuomotor_ros.node_common.LatestMessageReader`), so a 1 kHz ``joint_states``
stream does not wake this node's executor a thousand times a second; a state replaced
before it was taken is neither used nor checked. Only the target estimate of the features and its
confidence are used (the goal filter weighs estimates by confidence and ignores those below
``goal_min_confidence``, see :class:`visuomotor_core.goal_filter.GoalFilter`); the
embedding is not an input of this policy.

Lifecycle node: the model is loaded in ``on_configure``, nothing is published unless Active;
``autostart`` configures and activates at start. Loading checks the manifest against the
ONNX graph and against this deployment: the robot (the URDF's robot name), the camera rate
(``policy_rate_hz``) and the controller rate (``control_rate_hz``, by default the
``rate_hz`` of visuomotor_ros's controller.yaml). A failure there returns FAILURE with one log
line and an ERROR on ``/diagnostics``; the node stays up, unconfigured.

The sag estimator computes against the controller's own stiffness ``kp``: at configure the
``kp`` of controller_node in visuomotor_ros's controller.yaml when set there, else the robot
description's default (the controller's default too), checked against the ``kp`` the model
was trained with (the manifest's ``sag_estimator`` record; a warning on a mismatch). It then
asks the running controller node (``controller_node`` in this node's namespace) for its
``kp`` once that node's parameter service is up (a live change made before this node
started), and follows every ``kp`` the controller accepts after that through
``/parameter_events``, with the same check. An unexpected
exception in a callback is caught, logged (throttled) and counted (``callback_errors``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from geometry_msgs.msg import PointStamped
from rcl_interfaces.msg import ParameterEvent, ParameterType
from rcl_interfaces.srv import GetParameters
from rclpy.lifecycle import Node as LifecycleNode
from rclpy.lifecycle import State, TransitionCallbackReturn
from rclpy.qos import qos_profile_parameter_events
from sensor_msgs.msg import JointState
from std_srvs.srv import Trigger

from visuomotor_core.goal_filter import GoalFilter
from visuomotor_core.params import ParamSpec
from visuomotor_core.policy_features import DEFAULT_ACTION_SCALE, N_JOINTS
from visuomotor_core.policy_runtime import PolicyRuntime, load_policy_runtime
from visuomotor_core.robot_description import DEFAULT_ROBOT
from visuomotor_core.sag_estimator import gains_mismatch
from visuomotor_interfaces.msg import EncoderFeatures, JointTargets
from visuomotor_ros import graph
from visuomotor_ros.callback_guard import CallbackGuard, one_line
from visuomotor_ros.node_common import (
    DEFAULT_QOS,
    LATEST_QOS,
    SENSOR_QOS,
    DiagnosticsReporter,
    JointOrder,
    LatestMessageReader,
    ThrottledWarnings,
    declare_schema,
    now_seconds,
    on_set_validated,
    run_node,
    time_to_seconds,
)

NODE_NAME = "policy_node"
#: The default robot's arm joints (the targets name the ``robot`` parameter's).
JOINT_NAMES = graph.robot().arm_joints
_LATENCY_WINDOW = 256
_WARN_PERIOD = 2.0  # s, minimum interval between two warnings of one kind
_STATUS_PERIOD = 1.0  # s, /diagnostics while not active
_KP_QUERY_PERIOD = 0.5  # s, how often configure's query waits for the controller to be up
#: s: between features messages, the newest joint state is also taken this often, so a
#: refused one is counted and the state's validity is current while no features arrive.
_STATE_POLL_PERIOD = 0.1
#: A joint state is refused as impossible (a corrupt message, not a robot state) when a
#: position lies beyond the URDF limits by more than this, rad ...
STATE_POSITION_MARGIN = 0.5
#: ... or a velocity exceeds the URDF velocity limit by this factor. One such state would
#: otherwise stay in the history window and the sag estimate after it has passed.
STATE_VELOCITY_FACTOR = 3.0
#: Target estimates farther than this from the robot base are refused, m (well beyond any
#: arm's reach; a corrupt estimate would otherwise move the goal and wind up its integral).
MAX_TARGET_RANGE = 5.0
CONTROLLER_NODE = "controller_node"

SCHEMA: tuple[ParamSpec, ...] = (
    ParamSpec("robot", str, DEFAULT_ROBOT, "the robot (its description urdf/<robot>.yaml in "
              "visuomotor_description: joints, frames, URDF, default gains)", read_only=True),
    ParamSpec("model_name", str, "policy", "manifest entry of the policy to run",
              read_only=True, choices=("policy", "policy_no_history")),
    ParamSpec("model_path", str, "", "ONNX file; empty = the manifest entry's file next to "
              "the manifest", read_only=True),
    ParamSpec("manifest_path", str, "", "model manifest; empty = the installed "
              "visuomotor_models artifacts/manifest.json", read_only=True),
    ParamSpec("urdf_path", str, "", "robot URDF for forward kinematics; empty = the robot "
              "description's", read_only=True),
    ParamSpec("execution_provider", str, "cpu", "ONNX Runtime provider; falls back toward "
              "cpu", read_only=True, choices=("cpu", "cuda", "tensorrt")),
    ParamSpec("intra_op_threads", int, 1, "ONNX Runtime intra-op threads (0 = automatic)",
              min=0, max=64, read_only=True),
    ParamSpec("action_scale", float, DEFAULT_ACTION_SCALE, "joint-target residual per unit "
              "action", unit="rad", min=0.01, max=0.5),
    ParamSpec("max_feature_age", float, 0.2, "features older than this (by header stamp) are "
              "refused", unit="s", min=0.001, max=5.0),
    ParamSpec("policy_rate_hz", float, 20.0, "features (camera) rate; the policy acts once "
              "per features message; must equal the rate the model was trained for",
              unit="Hz", min=1.0, max=1000.0, read_only=True),
    ParamSpec("control_rate_hz", float, 0.0, "joint controller rate; must equal the rate the "
              "model was trained for; 0 = rate_hz of controller_node in visuomotor_ros's "
              "controller.yaml", unit="Hz", min=0.0, max=100000.0, read_only=True),
    ParamSpec("max_state_age", float, 0.2, "joint states older or further ahead than this "
              "(by header stamp) are refused", unit="s", min=0.001, max=5.0),
    ParamSpec("goal_smoothing", float, 0.3, "weight of the newest target estimate in the "
              "goal filter, times the estimate's confidence (1 = no smoothing)", "", 0.01,
              1.0),
    ParamSpec("goal_min_confidence", float, 0.5, "target estimates less confident than this "
              "are ignored once there is a goal (the first one is taken to start from)", "",
              0.0, 1.0),
    ParamSpec("goal_freeze_radius", float, 0.15, "the goal is frozen while the hand is this "
              "close to it (the hand disturbs the estimate)", "m", 0.0, 1.0),
    ParamSpec("goal_jump_distance", float, 0.1, "an estimate this far from the goal is a new "
              "target: the goal jumps to it", "m", 0.01, 2.0),
    ParamSpec("sag_feedforward", bool, True, "add the sag estimator's joint offset (models "
              "with one; the estimate keeps running when off)"),
    ParamSpec("goal_integral", bool, True, "shift the goal by the goal integral (models with "
              "one)"),
    ParamSpec("base_frame", str, "", "frame of the goal and targets; empty: the robot "
              "description's base frame",
              read_only=True),
    ParamSpec("autostart", bool, True, "configure and activate at start", read_only=True),
)


def _controller_file_parameters(path: Path) -> dict[str, Any]:
    """``controller_node``'s ``ros__parameters`` in a parameter file (OSError, ValueError,
    KeyError or TypeError when it cannot be read)."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ValueError(f"{path} is not valid YAML: {one_line(err)}") from err
    return dict(data[CONTROLLER_NODE]["ros__parameters"])


class PolicyNode(LifecycleNode):
    """Thin rclpy wrapper around :class:`PolicyRuntime` (see module docstring)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self._params = declare_schema(self, SCHEMA)
        on_set_validated(self, SCHEMA, self._apply_params)
        self._runtime: PolicyRuntime | None = None
        self._robot = graph.robot(self._params["robot"])
        self._base_frame = self._params["base_frame"] or self._robot.base_frame
        self._goal_filter = self._new_goal_filter()
        self._active = False
        self._joint_order = JointOrder(self._robot.arm_joints)
        self._q = np.zeros(N_JOINTS)
        self._qd = np.zeros(N_JOINTS)
        self._have_state = False
        self._latencies = np.zeros(_LATENCY_WINDOW)
        self._reset_counters()
        self._subs: list = []
        self._joint_states: LatestMessageReader | None = None
        self._state_timer = None
        self._reset_srv = None
        self._targets_pub = self._goal_pub = None
        self._kp_client = self._kp_timer = None
        self.configure_error = ""
        self._guard = CallbackGuard(self.get_logger(), _WARN_PERIOD, alive=self.context.ok)
        self._warnings = ThrottledWarnings(self.get_logger(), _WARN_PERIOD)
        self._diagnostics = DiagnosticsReporter(self, "policy")
        self._status_timer = self.create_timer(_STATUS_PERIOD,
                                               self._guard(self._report_status))
        if self._params["autostart"] \
                and self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            self.trigger_activate()

    # ------------------------------------------------------------------ parameters
    def _apply_params(self, changes: Mapping[str, Any]) -> tuple[bool, str]:
        self._params.update(changes)
        if any(k.startswith("goal_") for k in changes):
            self._goal_filter = self._new_goal_filter()
        if self._runtime is not None:
            self._apply_runtime_switches()
            if "action_scale" in changes:
                self._runtime.set_action_scale(float(changes["action_scale"]))
        return True, ""

    def _apply_runtime_switches(self) -> None:
        self._runtime.sag_enabled = bool(self._params["sag_feedforward"])
        self._runtime.integrator_enabled = bool(self._params["goal_integral"])

    def _new_goal_filter(self) -> GoalFilter:
        p = self._params
        return GoalFilter(p["goal_smoothing"], p["goal_freeze_radius"], p["goal_jump_distance"],
                          p["goal_min_confidence"])

    def _resolve(self, key: str, default: Path) -> Path:
        value = self._params[key]
        return Path(value) if value else default

    def _control_rate(self) -> tuple[float, str]:
        """The controller rate (Hz) this policy will run with, and where it comes from."""
        if self._params["control_rate_hz"] > 0.0:
            return float(self._params["control_rate_hz"]), "parameter control_rate_hz"
        path = graph.params_path("controller.yaml")
        try:
            return float(_controller_file_parameters(path)["rate_hz"]), f"{path.name} rate_hz"
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ValueError(f"control_rate_hz is 0 and the controller rate cannot be read "
                             f"from {path} ({one_line(err)}); set control_rate_hz") from err

    def _controller_kp(self) -> tuple[list[float], str]:
        """The controller's stiffness at start-up (N·m/rad) and where it comes from:
        controller.yaml's ``kp`` when set there, else the robot description's default."""
        path = graph.params_path("controller.yaml")
        try:
            kp = _controller_file_parameters(path).get("kp")
        except (OSError, ValueError, KeyError, TypeError):
            kp = None
        if kp is not None:
            return [float(k) for k in kp], f"{path.name} kp"
        robot = self._robot
        return list(robot.kp), f"robot description {robot.name}.yaml kp"

    @property
    def _controller_name(self) -> str:
        namespace = self.get_namespace().rstrip("/")
        return f"{namespace}/{CONTROLLER_NODE}"

    def _on_parameter_event(self, event: ParameterEvent) -> None:
        """Follow a live change of the controller's kp (see the module docstring)."""
        if event.node != self._controller_name or self._runtime is None \
                or self._runtime.sag is None:
            return
        for parameter in (*event.new_parameters, *event.changed_parameters):
            if parameter.name == "kp" \
                    and parameter.value.type == ParameterType.PARAMETER_DOUBLE_ARRAY:
                self._follow_controller_kp(list(parameter.value.double_array_value),
                                           f"{event.node} parameter kp")

    def _ask_controller_kp(self) -> None:
        """Once the controller's parameter service is up, ask it for its kp (once)."""
        client = self._kp_client
        if client is None or not client.service_is_ready():
            return
        self._kp_timer.cancel()
        future = client.call_async(GetParameters.Request(names=["kp"]))
        future.add_done_callback(self._guard(self._on_controller_kp))

    def _on_controller_kp(self, future) -> None:
        result = future.result()
        if self._runtime is None or self._runtime.sag is None or result is None \
                or not result.values:
            return
        value = result.values[0]
        if value.type == ParameterType.PARAMETER_DOUBLE_ARRAY:
            self._follow_controller_kp(list(value.double_array_value),
                                       f"{self._controller_name} parameter kp")

    def _follow_controller_kp(self, kp: list[float], source: str) -> None:
        sag = self._runtime.sag
        if len(kp) != N_JOINTS or min(kp) <= 0.0:
            self._warnings.warn("controller_kp", f"ignoring {source} {kp}: the sag estimator "
                                f"needs {N_JOINTS} positive gains")
            return
        if list(sag.kp) == kp:
            return
        sag.set_kp(kp)
        mismatch = gains_mismatch(sag.trained_kp, kp, source)
        if mismatch is not None:
            self.get_logger().warning(mismatch)
        self.get_logger().info(f"sag estimator follows {source}: {kp}")

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: State) -> TransitionCallbackReturn:
        from visuomotor_core.manifest import robot_name
        from visuomotor_core.onnx_session import SessionConfig
        from visuomotor_core.robot_model import RobotModel

        p = self._params
        try:
            urdf = self._resolve("urdf_path", self._robot.urdf)
            model = RobotModel.from_urdf_file(str(urdf), joint_names=list(self._robot.arm_joints))
            limits = model.limits
            self._state_bounds = (limits.lower - STATE_POSITION_MARGIN,
                                  limits.upper + STATE_POSITION_MARGIN,
                                  limits.velocity * STATE_VELOCITY_FACTOR)
            control_rate, control_source = self._control_rate()
            controller_kp, kp_source = self._controller_kp()
            self._runtime = load_policy_runtime(
                self._resolve("manifest_path", graph.model_path("manifest.json")),
                p["model_name"], model,
                SessionConfig(provider=p["execution_provider"],
                              intra_op_threads=p["intra_op_threads"]),
                model_path=p["model_path"] or None, action_scale=p["action_scale"],
                log=self.get_logger().info, robot=robot_name(urdf),
                camera_rate_hz=p["policy_rate_hz"], control_rate_hz=control_rate,
                sources={"robot": f"URDF {urdf.name}",
                         "camera_rate_hz": "parameter policy_rate_hz",
                         "control_rate_hz": control_source, "controller_kp": kp_source},
                controller_kp=controller_kp, warn=self.get_logger().warning,
                payload_link=self._robot.tool_frame, grasp_link=self._robot.grasp_link)

            self._apply_runtime_switches()
        except Exception as err:  # noqa: BLE001 - any load failure refuses the transition
            self._runtime = None
            self.configure_error = (f"cannot load policy '{p['model_name']}': "
                                    f"{one_line(err, 600)}")
            self.get_logger().error(self.configure_error)
            self._report_status()
            return TransitionCallbackReturn.FAILURE
        self.configure_error = ""
        self._targets_pub = self.create_publisher(JointTargets, graph.POLICY_TARGETS,
                                                  LATEST_QOS)
        self._goal_pub = self.create_publisher(PointStamped, graph.POLICY_GOAL, DEFAULT_QOS)
        # Best effort, newest only: matches reliable and best-effort drivers alike. Joint
        # states come at up to 1 kHz and only the newest is needed once per features
        # message: they are taken then (and every _STATE_POLL_PERIOD), not handled by the
        # executor one by one.
        self._joint_states = LatestMessageReader(
            self, JointState, graph.JOINT_STATES, SENSOR_QOS,
            self._guard(self._on_joint_state), suffix="joint_states")
        self._state_timer = self.create_timer(_STATE_POLL_PERIOD,
                                              self._guard(self._joint_states.take_latest))
        self._subs = [
            self.create_subscription(EncoderFeatures, graph.ENCODER_FEATURES,
                                     self._guard(self._on_features), LATEST_QOS),
            # The controller's live gain changes, for the sag estimator.
            self.create_subscription(ParameterEvent, graph.PARAMETER_EVENTS,
                                     self._guard(self._on_parameter_event),
                                     qos_profile_parameter_events),
        ]
        self._reset_srv = self.create_service(
            Trigger, graph.POLICY_RESET, self._guard(self._on_reset, self._reset_failed))
        if self._runtime.sag is not None:
            self._kp_client = self.create_client(
                GetParameters, f"{self._controller_name}/get_parameters")
            self._kp_timer = self.create_timer(_KP_QUERY_PERIOD,
                                               self._guard(self._ask_controller_kp))
        self.get_logger().info(
            f"policy '{p['model_name']}' configured: history_length="
            f"{self._runtime.config.history_length}, uses_history="
            f"{self._runtime.uses_history}, action_scale={self._runtime.config.action_scale}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        self._runtime.reset()
        self._goal_filter = self._new_goal_filter()
        self._reset_counters()
        self._active = True
        return super().on_activate(state)

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self._active = False
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def destroy_node(self) -> None:
        self._release_joint_states()
        super().destroy_node()

    def _release_joint_states(self) -> None:
        if self._state_timer is not None:
            self.destroy_timer(self._state_timer)
            self._state_timer = None
        if self._joint_states is not None:
            self._joint_states.destroy()
            self._joint_states = None

    def _release(self) -> None:
        self._active = False
        self._release_joint_states()
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs = []
        if self._reset_srv is not None:
            self.destroy_service(self._reset_srv)
            self._reset_srv = None
        for pub in (self._targets_pub, self._goal_pub):
            if pub is not None:
                self.destroy_publisher(pub)
        self._targets_pub = self._goal_pub = None
        if self._kp_timer is not None:
            self.destroy_timer(self._kp_timer)
        if self._kp_client is not None:
            self.destroy_client(self._kp_client)
        self._kp_timer = self._kp_client = None
        self._runtime = None

    # ------------------------------------------------------------------ callbacks
    @staticmethod
    def _reset_failed(request: Trigger.Request, response: Trigger.Response):
        response.success, response.message = False, "reset failed (see the node's log)"
        return response

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response):
        self._runtime.reset()
        self._goal_filter.reset()
        message = "history, sag estimate, goal integral and goal cleared"
        self.get_logger().info(f"policy reset: {message}")
        response.success, response.message = True, message
        return response

    def _reset_counters(self) -> None:
        self.counters = {"published": 0, "refused_stale": 0, "refused_future": 0,
                         "refused_non_finite": 0, "refused_out_of_range": 0,
                         "refused_frame": 0,
                         "refused_no_joint_state": 0, "refused_joint_state": 0,
                         "inference_errors": 0}
        self._latency_count = 0
        self._rate_start: float | None = None

    def _refuse(self, counter: str, kind: str, text: str) -> None:
        """Count a refused input and log a warning (one per kind per _WARN_PERIOD)."""
        self.counters[counter] += 1
        self._warnings.warn(kind, text)

    def _check_joint_state(self, msg: JointState
                           ) -> tuple[tuple[str, str] | None, np.ndarray, np.ndarray]:
        """((kind, reason) or None when usable, arm positions (rad), velocities (rad/s))."""
        none = np.zeros(0)
        names = list(msg.name)
        if len(set(names)) != len(names):
            return ("joint_state_names", f"joint_states names a joint twice: {names}"), \
                none, none
        index = self._joint_order.index(names)
        if index is None:
            return ("joint_state_names", f"joint_states lacks "
                    f"{self._joint_order.missing(names)}"), none, none
        for field in ("position", "velocity"):
            if len(getattr(msg, field)) != len(names):
                return ("joint_state_length", f"joint_states has {len(names)} names but "
                        f"{len(getattr(msg, field))} {field} values"), none, none
        age = now_seconds(self) - time_to_seconds(msg.header.stamp)
        limit = self._params["max_state_age"]
        if not abs(age) <= limit:
            when = "old" if age > 0 else "ahead"
            return ("joint_state_stamp", f"joint_states stamp is {abs(age):.3g} s {when} "
                    f"(max_state_age {limit} s)"), none, none
        position = np.asarray(msg.position, np.float64)[index]
        velocity = np.asarray(msg.velocity, np.float64)[index]
        if not (np.all(np.isfinite(position)) and np.all(np.isfinite(velocity))):
            return ("joint_state_non_finite", "joint_states position or velocity of an arm "
                    "joint is not finite"), none, none
        lower, upper, vmax = self._state_bounds
        if np.any(position < lower) or np.any(position > upper) \
                or np.any(np.abs(velocity) > vmax):
            return ("joint_state_range", "joint_states position or velocity of an arm joint "
                    "is physically impossible (beyond the URDF limits by more than "
                    f"{STATE_POSITION_MARGIN} rad or {STATE_VELOCITY_FACTOR}x the velocity "
                    "limit)"), none, none
        return None, position, velocity

    def _on_joint_state(self, msg: JointState) -> None:
        problem, position, velocity = self._check_joint_state(msg)
        if problem is None:
            self._q[:] = position
            self._qd[:] = velocity
            self._have_state = True
            return
        self._have_state = False
        kind, text = problem
        self._refuse("refused_joint_state", kind, f"{text}: refused")

    def _on_features(self, msg: EncoderFeatures) -> None:
        if not self._active:
            return
        self._joint_states.take_latest()
        now = now_seconds(self)
        age = now - time_to_seconds(msg.header.stamp)
        max_age = self._params["max_feature_age"]
        target = np.array([msg.target_position.x, msg.target_position.y,
                           msg.target_position.z])
        if not np.all(np.isfinite(target)):
            self._refuse("refused_non_finite", "features_non_finite",
                         "features with a non-finite target position refused")
        elif not (distance := float(np.hypot(np.hypot(*target[:2]), target[2]))) \
                <= MAX_TARGET_RANGE:
            self._refuse("refused_out_of_range", "features_range", f"features with the "
                         f"target {distance:.3g} m from the base refused (more than "
                         f"{MAX_TARGET_RANGE} m)")
        elif age > max_age:
            self._refuse("refused_stale", "features_stale", f"features {age:.3g} s old "
                         f"refused (max_feature_age {max_age} s)")
        elif age < -max_age:
            self._refuse("refused_future", "features_future", f"features stamped {-age:.3g} "
                         f"s ahead of this node's clock refused")
        elif msg.target_frame_id != self._base_frame:
            self._refuse("refused_frame", "features_frame", f"features with the target in "
                         f"frame '{msg.target_frame_id}' refused (expected "
                         f"'{self._base_frame}')")
        elif not self._have_state:
            self._refuse("refused_no_joint_state", "features_no_state",
                         "features refused: no valid joint state yet")
        else:
            self._act(msg, target, now)
        self._report(now)

    def _act(self, msg: EncoderFeatures, target: np.ndarray, now: float) -> None:
        """Filter the estimate into the goal (see GoalFilter), run the policy, publish."""
        try:
            goal, out = self._runtime.act_on_estimate(self._q, self._qd, target,
                                                      self._goal_filter, msg.confidence)
        except FloatingPointError as err:
            self.counters["inference_errors"] += 1
            self.get_logger().error(str(err), throttle_duration_sec=2.0)
            return
        targets = JointTargets()
        targets.header.stamp = msg.header.stamp
        targets.header.frame_id = self._base_frame
        targets.name = list(self._robot.arm_joints)
        targets.position = out.targets.tolist()
        targets.dynamics_latent = out.latent.tolist()
        targets.policy_stamp = self.get_clock().now().to_msg()
        targets.inference_time = out.inference_time
        self._targets_pub.publish(targets)
        goal_msg = PointStamped()
        goal_msg.header.stamp = msg.header.stamp
        goal_msg.header.frame_id = self._base_frame
        goal_msg.point.x, goal_msg.point.y, goal_msg.point.z = (float(v) for v in goal)
        self._goal_pub.publish(goal_msg)
        self._latencies[self._latency_count % _LATENCY_WINDOW] = out.inference_time
        self._latency_count += 1
        self.counters["published"] += 1
        if self._rate_start is None:
            self._rate_start = now

    def _report(self, now: float) -> None:
        if not self._diagnostics.due():
            return  # the values (percentiles) only when a report goes out
        n = min(self._latency_count, _LATENCY_WINDOW)
        window = self._latencies[:n]
        elapsed = now - self._rate_start if self._rate_start is not None else 0.0
        rate = (self.counters["published"] - 1) / elapsed if elapsed > 0.0 else 0.0
        refused = sum(v for k, v in self.counters.items() if k.startswith("refused"))
        level = "ok" if refused == 0 or self.counters["published"] > refused else "warn"
        values = {"rate_hz": rate,
                  "inference_p50_ms": float(np.percentile(window, 50)) * 1e3 if n else 0.0,
                  "inference_p99_ms": float(np.percentile(window, 99)) * 1e3 if n else 0.0,
                  "history_length": self._runtime.config.history_length,
                  **self._adaptation_values(),
                  **self.counters,
                  "callback_errors": self._guard.total}
        self._diagnostics.report(level, "running" if level == "ok" else "inputs refused",
                                 values)

    def _report_status(self) -> None:
        """/diagnostics while not active (when active, each features message reports)."""
        if self._active:
            return
        if self._runtime is None and self.configure_error:
            level, message = "error", self.configure_error
        else:
            level = "warn"
            message = "not configured" if self._runtime is None else "inactive"
        self._diagnostics.report(level, message, {"callback_errors": self._guard.total},
                                 force=True)

    def _adaptation_values(self) -> dict[str, float]:
        """The sag estimate and the goal integral, for the models that have them."""
        values = {}
        sag, integrator = self._runtime.sag, self._runtime.integrator
        if sag is not None:
            mass_ratio, payload = sag.theta
            values.update({
                "sag_link_mass_ratio": float(mass_ratio + 1.0),  # link_mass_scale / strength
                "sag_payload_kg": float(payload),  # payload / strength
                "sag_offset_max_rad": float(np.abs(self._runtime.sag_offset).max())})
        if integrator is not None:
            values["goal_integral_m"] = float(np.linalg.norm(integrator.integral))
        return values


def main(args: list[str] | None = None) -> None:
    run_node(PolicyNode, args, threads=1)


if __name__ == "__main__":
    main()
