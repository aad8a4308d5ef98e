"""Sim-to-real experiments: one YAML file, one command, run in parallel on Ray, plotted.

An experiment crosses policies (the exported ONNX policies by manifest name, and the
privileged ``expert``) with conditions (randomization profiles from any YAML file, and
one-term sweeps of the shift such as payload 0 -> 3 kg), seeds and modes:

* ``state_only``: the Gymnasium env without rendering (``policy_sim.ReachSim``), the policy
  seeing a noisy target estimate; per-step adaptation traces come from here.
* ``closed_loop``: the full ROS graph with the vision encoder (``visuomotor_ros.demo``, one
  process per episode, recorded as a rosbag2 directory).
* ``closed_loop_oracle``: the same graph with the sim's true target in place of the encoder.

Modules: :mod:`.config` (the YAML schema), :mod:`.plan` (episodes with content-derived ids),
:mod:`.episodes` (running one episode), :mod:`.store` (JSONL results, resume),
:mod:`.executors` (serial and Ray), :mod:`.stats` and :mod:`.report` (tables, figures,
Markdown and HTML), :mod:`.cli` (``experiment CONFIG``), :mod:`.bench` (serial vs Ray).

Tooling only: nothing under ``visuomotor_core``, ``visuomotor_ros`` or ``visuomotor_sim``
imports this package, Ray or matplotlib.
"""
