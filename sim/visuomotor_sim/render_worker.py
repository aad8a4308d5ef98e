"""The sim camera, rendered in a worker process from a kinematic copy of the world.

PyBullet holds the GIL for the whole of ``getCameraImage`` (about 23 ms for a
128×128 TinyRenderer frame here), so a frame rendered in the process that runs
the 1 kHz control loop would stall the loop for that long. The robot process
therefore keeps a worker process with its own PyBullet client holding the same
scene: every episode's seed, dynamics, visual parameters and target are sent to
it, and each frame request carries the arm's true joint positions at the frame
time; the worker poses its arm there and renders. The image is therefore the
one the robot's world shows at the frame's sim time; only the rendering runs in
parallel with the physics.

One frame is in flight at a time: a request made while the worker is busy is
dropped and counted, as a camera drops frames its driver cannot take.

A frame request is sent by the caller (the control loop's tick) itself: a tuple of
plain floats, about 10 µs to pickle and write, its wait for the GIL after the write
bounded by the loop's short switch interval (``waiting_in_loop``). In the lockstep
graph the call took 0.5-0.9 ms mean per frame all the same: the worker the write wakes
can preempt the loop's thread on its core (0.2 ms with the loop at SCHED_FIFO).
Handing it to a thread instead left it queued while the tick held the GIL: 1.6 ms p50
before the worker saw it, in lockstep, where the render is on the critical path. The other
messages (episode, target: larger, sent by the services) go through a thread of the
client, ``render-requests``; every message reaches the worker in the order made (a
request made while others are queued waits behind them).
"""

from __future__ import annotations

import os
import queue
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from visuomotor_core.rt_loop import LoopLock, waiting_in_loop
from visuomotor_sim.world import WorldConfig

#: Seconds to wait for the worker to start (imports PyBullet, builds the scene).
START_TIMEOUT = 60.0


def _serve(conn: Any, config: WorldConfig) -> None:
    """Worker main: answer requests on ``conn`` until 'close' or the pipe breaks."""
    from visuomotor_sim.world import ArmWorld

    world = ArmWorld(config)
    conn.send(("ready", world.camera_info()))
    try:
        while True:
            message = conn.recv()
            kind = message[0]
            if kind == "render":
                _, stamp, positions = message
                world.pose_arm(np.asarray(positions, dtype=np.float64))
                frame = world.render()
                conn.send(("frame", stamp, frame.shape))
                conn.send_bytes(np.ascontiguousarray(frame).reshape(-1))
            elif kind == "episode":
                _, seed, dynamics, visual, target = message
                world.reset(seed, dynamics=dynamics, visual=visual, target_position=target)
            elif kind == "target":
                world.set_target(message[1])
            elif kind == "close":
                break
    except (EOFError, OSError, KeyboardInterrupt):
        pass
    finally:
        world.close()


@dataclass
class Frame:
    """A rendered frame: RGB (H, W, 3) uint8 and its sim-time stamp, s."""

    stamp: float
    image: np.ndarray


class RenderWorker:
    """Client of the render process (thread-safe for requests; one reader of frames).

    Args:
        config: the world configuration (the worker builds the same scene).
    """

    def __init__(self, config: WorldConfig) -> None:
        # A fresh interpreter (no fork of a process running DDS threads), started as a
        # module so that it does not re-run the parent's main script.
        parent, child = socket.socketpair()
        self._process = subprocess.Popen(
            [sys.executable, "-m", "visuomotor_sim.render_worker", str(child.fileno())],
            pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        child.close()
        self._conn = Connection(parent.detach())
        self._conn.send(config)
        self._outbox: queue.SimpleQueue[tuple] = queue.SimpleQueue()
        # Orders the direct sends of requests with the queued messages: _queued counts
        # messages put and not yet sent; a request goes directly only when it is 0.
        self._send_lock = LoopLock()
        self._queued = 0
        self._sender = threading.Thread(target=self._send_all, name="render-requests",
                                        daemon=True)
        self._sender.start()
        self._idle = threading.Event()
        self._idle.set()
        self.dropped = 0
        self.rendered = 0
        if not self._conn.poll(START_TIMEOUT):
            self.close()
            raise RuntimeError("the render worker did not start")
        kind, self.camera_info = self._conn.recv()
        if kind != "ready":
            raise RuntimeError(f"render worker: unexpected first message {kind!r}")

    @property
    def alive(self) -> bool:
        return self._process.poll() is None

    def _send(self, message: tuple) -> None:
        """Queue ``message`` for the worker (sent in order by the sender thread)."""
        with self._send_lock:
            self._queued += 1
            self._outbox.put(message)

    def _send_all(self) -> None:
        """Sender thread: send queued messages until 'close' or the worker is gone (then
        frames stop coming and :meth:`receive` returns None)."""
        while True:
            message = self._outbox.get()
            with self._send_lock:
                self._queued -= 1
                try:
                    self._conn.send(message)
                except (OSError, ValueError):
                    return
            if message[0] == "close":
                return

    def episode(self, seed: int, dynamics: Any, visual: Any, target: np.ndarray) -> None:
        """The worker's world starts the same episode (applied after frames already asked)."""
        self._send(("episode", int(seed), dynamics, visual, np.array(target, float)))

    def set_target(self, target: np.ndarray) -> None:
        self._send(("target", np.array(target, float)))

    def request(self, stamp: float, positions: np.ndarray, wait: float = 0.0) -> bool:
        """Ask for the frame at ``stamp`` with the arm at ``positions`` (rad); False (and
        counted as dropped) while the previous frame is still being rendered after
        waiting up to ``wait`` s for it."""
        if not self._idle.is_set() and not (wait > 0.0 and self._idle.wait(wait)):
            self.dropped += 1
            return False
        self._idle.clear()
        message = ("render", float(stamp), [float(q) for q in positions])
        with self._send_lock:
            if self._queued:
                self._queued += 1
                self._outbox.put(message)
                return True
            try:
                with waiting_in_loop():
                    self._conn.send(message)
            except (OSError, ValueError):
                pass  # the worker is gone: no frame comes (receive returns None)
        return True

    def receive(self, timeout: float) -> Frame | None:
        """The next rendered frame, or None after ``timeout`` s (or when the worker ended)."""
        try:
            if not self._conn.poll(timeout):
                return None
            _kind, stamp, shape = self._conn.recv()
            data = self._conn.recv_bytes()
        except (EOFError, OSError):
            return None
        self._idle.set()
        self.rendered += 1
        return Frame(stamp, np.frombuffer(data, dtype=np.uint8).reshape(shape))

    def close(self) -> None:
        """Stop the worker (idempotent)."""
        self._send(("close",))
        self._sender.join(timeout=5.0)
        try:
            self._process.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=2.0)
        self._conn.close()


def main(argv: list[str] | None = None) -> None:
    """Worker process entry: ``python -m visuomotor_sim.render_worker FD``."""
    import signal

    # The robot process stops the worker; a Ctrl-C to the process group must not.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Rendering is the camera's work, below the control loop: never real-time priority,
    # even when the robot process runs under chrt.
    try:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        os.nice(5)
    except OSError:
        pass
    fd = int((argv or sys.argv[1:])[0])
    conn = Connection(fd)
    _serve(conn, conn.recv())


if __name__ == "__main__":
    main()
