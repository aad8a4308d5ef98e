"""The multi-process bringup (visuomotor_bringup.multiprocess) with real processes: the
plan's processes each in its own OS process, started from the installed console scripts
with the generated parameter files; launch-like stop (SIGINT first, status 0 when all end
cleanly); a required process dying shuts the graph down and says which and how; refused
arguments start nothing. The robot bringup is used (controller, encoder, policy: no sim
needed, so it stays light on a 2-core machine)."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from visuomotor_bringup import plan
from visuomotor_bringup.multiprocess import Bringup, executable_path
from visuomotor_core.timing import wait_until

TIMEOUT = 40.0
MODULE = [sys.executable, "-m", "visuomotor_bringup.multiprocess"]


def _wait_until(condition, timeout: float = TIMEOUT) -> bool:
    return wait_until(condition, timeout, 0.05)

def _started(bringup: Bringup) -> bool:
    """Every process has logged a line of its own (it is up and spinning)."""
    return all(any("[INFO]" in line for line in bringup.output(p.role))
               for p in bringup.processes)


@pytest.fixture
def robot_bringup():
    # SIGINT, then SIGKILL after sigint_timeout (wall clock: a loaded CI machine is slow).
    bringup = Bringup(plan.plan(False, {"namespace": "mp_test"}), output=io.StringIO(),
                      sigint_timeout=20.0)
    bringup.start()
    try:
        yield bringup
    finally:
        bringup.stop("test ended")


def test_processes_start_from_the_ament_index_with_generated_parameters():
    bringup = Bringup(plan.plan(False, {"namespace": "arm"}))
    commands = bringup.commands("/params")
    assert list(commands) == ["controller", "encoder", "policy"]
    assert commands["controller"] == [
        str(executable_path("visuomotor_ros", "controller_node")),
        "--ros-args", "-r", "__ns:=/arm", "--params-file", "/params/controller.yaml"]


def test_each_process_runs_with_its_plan_environment(tmp_path):
    """The plan's variables (the DDS profile) reach the child on top of the environment."""
    out = tmp_path / "env.txt"
    process = plan.ProcessPlan(
        role="probe", package="p", executable="e", namespace="", node_names=(),
        params_files=(), overrides={},
        arguments=("-c", f"import os; open({str(out)!r}, 'w').write("
                         "os.environ['FASTRTPS_DEFAULT_PROFILES_FILE'] + ' ' + "
                         "os.environ['KEPT'])"),
        environment=(("FASTRTPS_DEFAULT_PROFILES_FILE", "/profile.xml"),))
    bringup = Bringup([process], output=io.StringIO(), env={**os.environ, "KEPT": "yes"},
                      resolve=lambda package, executable: sys.executable)
    bringup.start()
    assert _wait_until(lambda: not bringup.alive())
    bringup.stop("done")
    assert out.read_text() == "/profile.xml yes"


def test_stop_sends_sigint_and_every_process_ends_cleanly(robot_bringup):
    assert _wait_until(lambda: _started(robot_bringup)), robot_bringup.returncodes()
    assert robot_bringup.alive()
    assert robot_bringup.stop() == 0
    assert robot_bringup.returncodes() == {"controller": 0, "encoder": 0, "policy": 0}
    for process in robot_bringup.processes:
        assert not any("Traceback" in line for line in robot_bringup.output(process.role))
    assert robot_bringup.wait(0) == 0


def test_required_process_killed_shuts_the_graph_down(robot_bringup):
    assert _wait_until(lambda: _started(robot_bringup))
    os.kill(robot_bringup.pid("controller"), signal.SIGKILL)
    assert robot_bringup.wait(TIMEOUT) == 1
    assert robot_bringup.reason == "required process 'controller' was killed by SIGKILL"
    codes = robot_bringup.returncodes()
    assert codes == {"controller": -signal.SIGKILL, "encoder": 0, "policy": 0}, \
        {role: robot_bringup.output(role)[-15:] for role in ("encoder", "policy")}
    log = robot_bringup._output.getvalue()
    assert "[bringup] required process 'controller' was killed by SIGKILL: shutting the " \
           "graph down" in log
    assert "[encoder] " in log and "[policy] " in log  # output prefixed by role


def test_optional_process_exit_leaves_the_graph_running(robot_bringup):
    assert _wait_until(lambda: _started(robot_bringup))
    os.kill(robot_bringup.pid("encoder"), signal.SIGKILL)
    assert _wait_until(lambda: not robot_bringup.alive("encoder"))
    time.sleep(0.5)
    assert robot_bringup.alive("controller") and robot_bringup.wait(0) is None
    assert robot_bringup.stop() == 1  # the encoder's SIGKILL is an error of the run


def test_refused_argument_starts_nothing():
    result = subprocess.run([*MODULE, "sim", "use_sim_time:=false"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert "use_sim_time:=false is refused" in result.stderr
    assert "robot_bringup" in result.stderr
    assert "starting" not in result.stdout


def test_dry_run_prints_commands_and_parameters():
    result = subprocess.run([*MODULE, "robot", "command_interface:=position", "--dry-run"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "controller: " in result.stdout and "--params-file" in result.stdout
    assert "command_interface: position" in result.stdout


def test_command_line_bringup_exits_zero_on_ctrl_c():
    """Ctrl-C in a terminal: SIGINT to the bringup's whole process group."""
    popen = subprocess.Popen([*MODULE, "robot", "namespace:=mp_cli"], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(
        raw.decode() for raw in iter(popen.stdout.readline, b"")), daemon=True)
    reader.start()
    try:
        assert _wait_until(lambda: all(any(line.startswith(f"[{role}] [INFO]")
                                           for line in list(lines))
                                       for role in ("controller", "encoder", "policy"))), lines
        os.killpg(popen.pid, signal.SIGINT)
        assert popen.wait(TIMEOUT) == 0, "".join(lines)
    finally:
        if popen.poll() is None:
            os.killpg(popen.pid, signal.SIGKILL)
            popen.wait()
    reader.join(5.0)
    text = "".join(lines)
    assert "[bringup] stopping (SIGINT received)" in text
    assert "Traceback" not in text
