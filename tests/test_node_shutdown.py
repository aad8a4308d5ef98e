"""Clean shutdown of node processes (node_common.run_nodes), with real processes: SIGINT or
SIGTERM, to the process or to its whole process group (a terminal's Ctrl-C), once or
twice, at any moment including construction, ends it with status 0 and no traceback;
a bad parameter ends it with a one-line error."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

TIMEOUT = 30.0


def _installed(package: str, executable: str) -> Path:
    from ament_index_python.packages import get_package_prefix

    return Path(get_package_prefix(package)) / "lib" / package / executable


class Process:
    """A child in its own process group whose output (stdout + stderr) is collected."""

    def __init__(self, command: list[str]) -> None:
        self.popen = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, start_new_session=True,
                                      env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for raw in iter(self.popen.stdout.readline, b""):
            self.lines.append(raw.decode("utf-8", "replace"))

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text: str, timeout: float = TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            assert self.popen.poll() is None, f"exited {self.popen.returncode}:\n{self.output}"
            assert time.monotonic() < deadline, f"no '{text}' within {timeout} s:\n{self.output}"
            time.sleep(0.05)

    def signal(self, sig: signal.Signals, group: bool) -> None:
        if group:
            os.killpg(self.popen.pid, sig)
        else:
            self.popen.send_signal(sig)

    def finish(self, timeout: float = TIMEOUT) -> int:
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()
            pytest.fail(f"still running {timeout} s after the signal:\n{self.output}")
        self._reader.join(5.0)
        return code


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
@pytest.mark.parametrize("group", [True, False], ids=["group", "process"])
def test_encoder_node_exits_zero_without_traceback_on_signal(sig, group):
    process = Process([str(_installed("visuomotor_ros", "encoder_node"))])
    process.wait_for("runs on")  # configured: the model is loaded, the node spins
    process.signal(sig, group)
    assert process.finish() == 0, process.output
    assert "Traceback" not in process.output
    assert "never retrieved" not in process.output


def test_bad_parameter_ends_with_one_line_error():
    process = Process([str(_installed("visuomotor_ros", "encoder_node")),
                       "--ros-args", "-p", "intra_op_threads:=-3"])
    assert process.finish() == 1
    assert "intra_op_threads" in process.output
    assert "Traceback" not in process.output


def _script(body: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(body)]


TWO_NODES = """
    import sys, time
    from rclpy.node import Node
    from visuomotor_ros.node_common import run_nodes

    def build():
        print("constructing", flush=True)
        time.sleep(float(sys.argv[1]))
        nodes = [Node("first"), Node("second")]
        for node in nodes:  # busy callbacks in both worker threads when the signal comes
            node.create_timer(0.001, lambda: sum(range(1000)))
        print("spinning", flush=True)
        return nodes

    run_nodes(build, threads=2)
    print("returned", flush=True)
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_multi_node_process_survives_repeated_group_signals(sig):
    """Ctrl-C reaches the whole group, then launch sends its own SIGINT: still status 0."""
    process = Process([*_script(TWO_NODES), "0"])
    process.wait_for("spinning")
    time.sleep(0.5)
    for _ in range(3):
        process.signal(sig, group=True)
        time.sleep(0.02)
    assert process.finish() == 0, process.output
    assert "Traceback" not in process.output and "never retrieved" not in process.output
    assert "returned" in process.output


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_signal_during_construction_exits_zero(sig):
    process = Process([*_script(TWO_NODES), "2.0"])
    process.wait_for("constructing")
    process.signal(sig, group=True)
    assert process.finish() == 0, process.output
    assert "Traceback" not in process.output
    assert "spinning" not in process.output  # it stops instead of starting to spin


ORPHAN_WATCH = """
    # A launcher (this script's child) starts a node process and is then SIGKILLed, as
    # `ros2 launch` can be, or dies of a SIGTERM it does not pass on. This script is a
    # child subreaper (Linux), so the orphaned node becomes its child: it reports how the
    # node ended.
    import ctypes, os, signal, subprocess, sys, time
    PR_SET_CHILD_SUBREAPER = 36
    assert ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    node_cmd = sys.argv[1:]
    launcher = subprocess.Popen(
        [sys.executable, "-c",
         "import subprocess, sys, time\\n"
         "child = subprocess.Popen(sys.argv[1:])\\n"
         "print(child.pid, flush=True)\\n"
         "time.sleep(600)\\n", *node_cmd],
        stdout=subprocess.PIPE)
    node_pid = int(launcher.stdout.readline())
    ready = []
    signal.signal(signal.SIGUSR1, lambda *_: ready.append(True))  # the node is up
    while not ready:
        time.sleep(0.05)
    print("killing the launcher", flush=True)
    launcher.kill()
    launcher.wait()
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline:
        pid, status = os.waitpid(node_pid, os.WNOHANG)
        if pid == node_pid:
            print(f"node ended: {os.waitstatus_to_exitcode(status)}", flush=True)
            break
        time.sleep(0.05)
    else:
        os.kill(node_pid, signal.SIGKILL)
        print("node still running 30 s after its launcher died", flush=True)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_node_ends_cleanly_when_its_launcher_is_killed():
    """No orphan keeps running (a controller still commanding) when the launcher dies."""
    process = Process([*_script(ORPHAN_WATCH), str(_installed("visuomotor_ros", "encoder_node"))])
    process.wait_for("runs on")  # the node is configured and spinning
    process.popen.send_signal(signal.SIGUSR1)
    process.wait_for("killing the launcher")
    assert process.finish() == 0, process.output
    assert "node ended: 0" in process.output, process.output
    assert "Traceback" not in process.output


STUCK = """
    import time
    from rclpy.node import Node
    from visuomotor_ros import node_common

    node_common.SHUTDOWN_TIMEOUT = 2.0

    def build():
        node = Node("stuck")

        def stuck_in_a_callback():
            print("stuck", flush=True)
            while True:  # never returns: the executor cannot stop
                time.sleep(0.05)

        node.create_timer(0.1, stuck_in_a_callback)
        return [node]

    node_common.run_nodes(build)
"""


def test_a_process_that_cannot_stop_ends_with_its_stacks_after_the_shutdown_timeout():
    process = Process(_script(STUCK))
    process.wait_for("stuck")
    process.signal(signal.SIGINT, group=False)
    assert process.finish() == 1, process.output
    # faulthandler's dump names where it hung.
    assert "in stuck_in_a_callback" in process.output, process.output
