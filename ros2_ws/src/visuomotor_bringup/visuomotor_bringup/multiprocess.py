"""Multi-process bringup: the deployed graph, one OS process per process of the plan,
without ``ros2 launch``.

    visuomotor-bringup sim          # ros2 launch visuomotor_bringup sim_bringup.launch.py
    visuomotor-bringup sim step_mode:=realtime namespace:=arm
    visuomotor-bringup robot command_interface:=position --dry-run
    python -m visuomotor_bringup.multiprocess sim profile:=heldout

Same plan (:mod:`visuomotor_bringup.plan`), same executables, parameters and
remappings as the launch files; what CI and pip-only installs (no ``launch``)
run. Each process is started as ``ros2 launch``/``ros2 run`` start it: the console
script ``<prefix>/lib/<package>/<executable>`` from the ament index with
``--ros-args -r __ns:=... --params-file ... -r from:=to``. Its output is printed
line by line, prefixed ``[role]``.

Signals behave as under launch: SIGINT or SIGTERM to the bringup sends SIGINT to
every process, then SIGTERM after ``sigint_timeout`` s, then SIGKILL after
``sigterm_timeout`` s. Each process runs in its own process group, so a
terminal's Ctrl-C reaches it once, through the bringup; a process left behind by a
killed bringup gets SIGTERM from the kernel (Linux parent-death signal). When a
required process (the robot: controller, sim) exits, the bringup says which and
how, stops the others and exits 1. Exit status 0 when every process ended with
status 0 after a stop.
"""

from __future__ import annotations

import argparse
import collections
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TextIO

from visuomotor_bringup import plan as bringup_plan
from visuomotor_core.rt_loop import set_parent_death_signal


def executable_path(package: str, executable: str) -> Path:
    """``<prefix>/lib/<package>/<executable>`` from the ament index (what ``ros2 run`` runs)."""
    from ament_index_python.packages import PackageNotFoundError, get_package_prefix

    try:
        prefix = Path(get_package_prefix(package))
    except PackageNotFoundError:
        raise FileNotFoundError(
            f"package '{package}' is not in the ament index (AMENT_PREFIX_PATH): build ros2_ws "
            "and source its install/setup.bash (or scripts/env.sh)") from None
    path = prefix / "lib" / package / executable
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise FileNotFoundError(f"{path}: no such executable in package '{package}'")
    return path


def _in_own_group_dying_with_parent() -> None:  # runs in the child between fork and exec
    os.setpgid(0, 0)
    set_parent_death_signal(signal.SIGTERM)


class _Child:
    """One started process: its Popen, the thread copying its output, its last lines."""

    def __init__(self, process: bringup_plan.ProcessPlan, popen: subprocess.Popen,
                 keep_lines: int) -> None:
        self.plan = process
        self.popen = popen
        self.lines: collections.deque[str] = collections.deque(maxlen=keep_lines)
        self.reader: threading.Thread | None = None
        self.reported = False


class Bringup:
    """Start, watch and stop the processes of a plan.

    >>> bringup = Bringup(plan.plan(True, {}))         # doctest: +SKIP
    >>> bringup.start(); bringup.wait(timeout=60); bringup.stop()   # doctest: +SKIP

    ``wait`` returns when the bringup has ended (a required process exited, or
    ``stop``); the status is 1 after a required process exited on its own, else 0
    when every process ended with status 0.
    """

    def __init__(
        self,
        processes: Sequence[bringup_plan.ProcessPlan],
        *,
        output: TextIO | None = None,
        sigint_timeout: float = 5.0,
        sigterm_timeout: float = 5.0,
        env: Mapping[str, str] | None = None,
        keep_lines: int = 5000,
        resolve: Callable[[str, str], Path] = executable_path,
    ) -> None:
        self.processes = list(processes)
        self._output = output if output is not None else sys.stdout
        self._sigint_timeout = sigint_timeout
        self._sigterm_timeout = sigterm_timeout
        self._env = dict(os.environ if env is None else env)
        # Line-buffered output from the children, like launch's output='screen'.
        self._env.setdefault("PYTHONUNBUFFERED", "1")
        self._keep_lines = keep_lines
        self._resolve = resolve
        self._children: dict[str, _Child] = {}
        self._write_lock = threading.Lock()
        self._stop_lock = threading.Lock()
        self._report_lock = threading.Lock()
        self._stopping = threading.Event()
        self._ended = threading.Event()
        self._watcher: threading.Thread | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self.reason: str = ""
        self.status: int | None = None

    # -- life cycle -----------------------------------------------------------------
    def commands(self, params_dir: str | Path) -> dict[str, list[str]]:
        """The command line of every process (parameter files named under ``params_dir``)."""
        return {
            process.role: [str(self._resolve(process.package, process.executable)),
                           *process.arguments,
                           *process.ros_arguments(Path(params_dir) / f"{process.role}.yaml")]
            for process in self.processes
        }

    def start(self) -> None:
        """Start every process (in plan order) and the thread watching them."""
        if self._children:
            raise RuntimeError("Bringup.start() called twice")
        self._tmp = tempfile.TemporaryDirectory(prefix="visuomotor-bringup-")
        commands = self.commands(self._tmp.name)  # every executable resolved before any start
        try:
            for process in self.processes:
                params = Path(self._tmp.name) / f"{process.role}.yaml"
                params.write_text(process.parameters_yaml(), encoding="utf-8")
                self._spawn(process, commands[process.role])
        except BaseException:
            self.stop("start failed")
            raise
        self._watcher = threading.Thread(target=self._watch, name="bringup-watch", daemon=True)
        self._watcher.start()

    def _spawn(self, process: bringup_plan.ProcessPlan, command: list[str]) -> None:
        self._log(f"starting {process.role}: {shlex.join(command)}")
        popen = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**self._env, **dict(process.environment)},
            preexec_fn=_in_own_group_dying_with_parent,
        )
        child = _Child(process, popen, self._keep_lines)
        child.reader = threading.Thread(
            target=self._copy_output, args=(child,), name=f"bringup-{process.role}", daemon=True)
        child.reader.start()
        self._children[process.role] = child

    def alive(self, role: str | None = None) -> bool:
        """Whether process ``role`` (default: every process) is running."""
        children = [self._children[role]] if role else list(self._children.values())
        return bool(children) and all(child.popen.poll() is None for child in children)

    def returncodes(self) -> dict[str, int | None]:
        return {role: child.popen.poll() for role, child in self._children.items()}

    def pid(self, role: str) -> int:
        return self._children[role].popen.pid

    def output(self, role: str) -> list[str]:
        """The last lines process ``role`` wrote (stdout and stderr)."""
        return list(self._children[role].lines)

    def wait(self, timeout: float | None = None) -> int | None:
        """Block until the bringup has ended; its exit status, or None on timeout."""
        self._ended.wait(timeout)
        return self.status if self._ended.is_set() else None

    def stop(self, reason: str = "stop requested") -> int:
        """SIGINT every process; SIGTERM, then SIGKILL, the ones that do not end. Idempotent."""
        with self._stop_lock:
            if not self._stopping.is_set():
                self._stopping.set()
                self.reason = self.reason or reason
                self._shut_down()
        self._ended.wait()
        return self.status if self.status is not None else 1

    def __enter__(self) -> Bringup:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop("leaving the bringup context")

    # -- internals ------------------------------------------------------------------
    def _shut_down(self) -> None:
        running = [c for c in self._children.values() if c.popen.poll() is None]
        if running:
            roles = ", ".join(c.plan.role for c in running)
            self._log(f"stopping ({self.reason}): SIGINT to {roles}")
        for sig, timeout in ((signal.SIGINT, self._sigint_timeout),
                             (signal.SIGTERM, self._sigterm_timeout),
                             (signal.SIGKILL, 5.0)):
            running = [c for c in self._children.values() if c.popen.poll() is None]
            if not running:
                break
            if sig != signal.SIGINT:
                self._log(f"{', '.join(c.plan.role for c in running)} still running: "
                          f"{sig.name}")
            for child in running:
                _signal_group(child.popen, sig)
            deadline = time.monotonic() + timeout
            for child in running:
                try:
                    child.popen.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
        for child in self._children.values():
            if child.reader is not None:
                child.reader.join(timeout=2.0)
            self._report_exit(child)
        if self.status is None:
            failed = [c.plan.role for c in self._children.values() if c.popen.poll() != 0]
            self.status = 1 if failed else 0
            if failed:
                self._log(f"ended with errors: {', '.join(failed)}")
        if self._tmp is not None:
            self._tmp.cleanup()
        self._ended.set()

    def _watch(self) -> None:
        while not self._stopping.is_set():
            for child in list(self._children.values()):
                if child.popen.poll() is None or child.reported:
                    continue
                self._report_exit(child)
                if child.plan.required:
                    with self._stop_lock:
                        if self._stopping.is_set():
                            return
                        self.status = 1
                        self.reason = (f"required process '{child.plan.role}' "
                                       f"{bringup_plan.describe_exit(child.popen.returncode)}")
                        self._log(f"{self.reason}: shutting the graph down")
                        self._stopping.set()
                        self._shut_down()
                    return
            time.sleep(0.05)

    def _report_exit(self, child: _Child) -> None:
        code = child.popen.poll()
        with self._report_lock:
            if code is None or child.reported:
                return
            child.reported = True
        how = bringup_plan.describe_exit(code)
        self._log(f"process '{child.plan.role}' (pid {child.popen.pid}) {how}")

    def _copy_output(self, child: _Child) -> None:
        assert child.popen.stdout is not None
        prefix = f"[{child.plan.role}] "
        for raw in iter(child.popen.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            child.lines.append(line)
            self._write(prefix + line)
        child.popen.stdout.close()

    def _log(self, text: str) -> None:
        self._write(f"[bringup] {text}")

    def _write(self, line: str) -> None:
        with self._write_lock:
            try:
                self._output.write(line + "\n")
                self._output.flush()
            except (OSError, ValueError):  # closed terminal or stream
                pass


def _signal_group(popen: subprocess.Popen, sig: signal.Signals) -> None:
    try:
        os.killpg(popen.pid, sig)
    except ProcessLookupError:
        pass


def _parser() -> argparse.ArgumentParser:
    lines = []
    for name, arg in bringup_plan.ARGUMENTS.items():
        where = "" if len(arg.bringups) == 2 else f" [{arg.bringups[0]} only]"
        default = arg.default if arg.default else "''"
        lines.append(f"  {name}:={default}{where}\n      {arg.description}")
    parser = argparse.ArgumentParser(
        prog="visuomotor-bringup",
        description="Start the visuomotor graph, one OS process per process of the "
                    "bringup plan (what ros2 launch visuomotor_bringup "
                    "<kind>_bringup.launch.py starts), without ros2 launch. Ctrl-C stops it.",
        epilog="launch arguments (name:=value; robot_bringup defaults use_sim_time to "
               "false):\n" + "\n".join(lines),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("kind", choices=(bringup_plan.SIM, bringup_plan.ROBOT),
                        help="sim: simulated robot; robot: a real robot's drivers")
    parser.add_argument("arguments", nargs="*", metavar="name:=value",
                        help="launch arguments, as for ros2 launch")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the command lines and parameters, start nothing")
    parser.add_argument("--sigint-timeout", type=float, default=5.0, metavar="S",
                        help="seconds from SIGINT to SIGTERM when stopping (default 5)")
    parser.add_argument("--sigterm-timeout", type=float, default=5.0, metavar="S",
                        help="seconds from SIGTERM to SIGKILL when stopping (default 5)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    sim = args.kind == bringup_plan.SIM
    try:
        given = bringup_plan.parse_assignments(args.arguments)
        processes = bringup_plan.plan(sim, given)
    except ValueError as error:
        print(f"visuomotor-bringup: {error}", file=sys.stderr)
        return 2
    extras, notes = bringup_plan.optional_processes(sim, given, bringup_plan.installed)
    for note in notes:
        print(f"[bringup] {note}")
    processes += extras
    bringup = Bringup(processes, sigint_timeout=args.sigint_timeout,
                      sigterm_timeout=args.sigterm_timeout)
    if args.dry_run:
        try:
            for role, command in bringup.commands("<params>").items():
                print(f"{role}: {shlex.join(command)}")
        except FileNotFoundError as error:
            print(f"visuomotor-bringup: {error}", file=sys.stderr)
            return 2
        for process in processes:
            print(process.parameters_yaml())
        return 0

    requested = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        if not requested.is_set():
            bringup.reason = f"{signal.Signals(signum).name} received"
        requested.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        bringup.start()
    except FileNotFoundError as error:
        print(f"visuomotor-bringup: {error}", file=sys.stderr)
        return 2
    while not requested.is_set() and bringup.wait(timeout=0.2) is None:
        pass
    return bringup.stop(bringup.reason or "signal")


if __name__ == "__main__":
    sys.exit(main())
