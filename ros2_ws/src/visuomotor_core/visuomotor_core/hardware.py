"""The hardware seam of the control loop: read state, write command, time.

As ros2_control's hardware interface, the controller's loop runs
``read → update → write`` in one thread of one process and only talks to the
robot through this seam. Backends:

* the PyBullet world in-process (:class:`visuomotor_sim.hardware.SimHardware`):
  ``cycle()`` steps the physics by one control period, time is sim time;
* ROS topics (:class:`visuomotor_ros.topic_hardware.TopicHardware`): the latest
  ``joint_states`` in, a ros2_control forward-command topic out, for a robot
  whose own driver runs the fast loop; time is the node's clock.

Everything here is ROS-free; the hot path allocates nothing: :meth:`read`
fills a preallocated :class:`JointSample`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass
class JointSample:
    """One measured joint state, in the hardware's joint order (buffers reused every read).

    Attributes:
        position: rad, (n,).
        velocity: rad/s, (n,).
        effort: N·m, (n,).
        stamp: time the state was measured, s, on the hardware's clock; ``-inf`` before
            the first sample.
        sequence: increases by one with every new sample (a read that finds no new
            sample leaves it unchanged).
        epoch: changes when the hardware's state jumps without the controller's doing
            (a simulator's episode reset teleports the arm); the controller then
            restarts from the measured state. A real arm's stays 0.
    """

    position: np.ndarray
    velocity: np.ndarray
    effort: np.ndarray
    stamp: float = -math.inf
    sequence: int = 0
    epoch: int = 0

    @classmethod
    def zeros(cls, n: int) -> JointSample:
        return cls(np.zeros(n), np.zeros(n), np.zeros(n))

    def copy_from(self, other: JointSample) -> None:
        """Copy ``other`` into this sample's buffers (no allocation)."""
        self.position[:] = other.position
        self.velocity[:] = other.velocity
        self.effort[:] = other.effort
        self.stamp = other.stamp
        self.sequence = other.sequence
        self.epoch = other.epoch


class Hardware(Protocol):
    """What the control loop needs from a robot (simulated or real).

    Attributes:
        joint_names: the arm joints, in the order of every array exchanged.
        lockstep: True when :meth:`cycle` advances the hardware's own time by one
            control period (a simulator stepping on demand): the loop then runs as
            fast as the hardware allows instead of on wall-clock deadlines.
    """

    joint_names: tuple[str, ...]
    lockstep: bool

    def now(self) -> float:
        """The hardware's clock, s (sim time, or the node's ROS clock)."""
        ...

    def read(self, sample: JointSample) -> None:
        """Copy the latest measured state into ``sample`` (unchanged when none yet)."""
        ...

    def write(self, command: np.ndarray, interface: str) -> None:
        """Send one command (n,): efforts (N·m), positions (rad) or velocities (rad/s)."""
        ...

    def cycle(self) -> None:
        """End of one control period (a simulator steps its physics here)."""
        ...


@dataclass
class LatestSample:
    """A single-slot mailbox between a receiving thread and the control loop.

    ``put`` (any thread) and ``take`` (the loop) copy under a lock into
    preallocated buffers; the loop never waits for a sample.
    """

    n: int
    _slot: JointSample = field(init=False)

    def __post_init__(self) -> None:
        from visuomotor_core.rt_loop import LoopLock

        self._slot = JointSample.zeros(self.n)
        self._lock = LoopLock()  # the loop's tick takes from it

    def put(self, position: np.ndarray, velocity: np.ndarray, effort: np.ndarray | None,
            stamp: float) -> None:
        with self._lock:
            slot = self._slot
            slot.position[:] = position
            slot.velocity[:] = velocity
            if effort is None:
                slot.effort[:] = 0.0
            else:
                slot.effort[:] = effort
            slot.stamp = stamp
            slot.sequence += 1

    def take(self, sample: JointSample) -> None:
        with self._lock:
            if self._slot.sequence != sample.sequence:
                sample.copy_from(self._slot)
