# visuomotor: the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
RUN := scripts/with-env.sh
EPISODES ?= 10
PROFILE ?= nominal
SEED ?= 0
ARGS ?=

.PHONY: setup demo test lint bench train-encoder train-policy evaluate experiment constraints clean

setup:  ## create .venv, install pinned packages, colcon build ros2_ws (idempotent)
	bash scripts/setup.sh

demo: setup  ## run the full ROS 2 graph headless on the committed models and print the report
	$(RUN) python -m visuomotor_ros.demo --episodes $(EPISODES) --profile $(PROFILE) --seed $(SEED) $(ARGS)

test: setup  ## lint + the whole test suite
	$(RUN) ruff check .
	$(RUN) python -m pytest

lint: setup
	$(RUN) ruff check .

BENCH_ARGS ?= --hog
bench: setup  ## benchmarks: real-time topology (one process per node, with a CPU hog), sim/render, encoder, control law
	$(RUN) python -m visuomotor_bringup.bench_realtime $(BENCH_ARGS)
	$(RUN) python -m visuomotor_sim.bench
	$(RUN) python -m visuomotor_models.bench_encoder
	$(RUN) python -m visuomotor_ros.bench_image_conversion
	$(RUN) python -m visuomotor_ros.bench_controller

train-encoder: setup
	$(RUN) python -m visuomotor_models.train_encoder

train-policy: setup
	$(RUN) python -m visuomotor_models.train_policy

evaluate: setup
	$(RUN) python -m visuomotor_models.evaluate_policy

CONFIG ?= models/config/experiments/policy_eval.yaml
experiment: setup  ## run an experiment YAML on Ray (every core; ARGS=--address HOST:PORT joins a cluster) and write its report
	$(RUN) python -m visuomotor_models.experiment $(CONFIG) $(ARGS)

constraints:  ## re-pin every installed package after changing a requirements file
	.venv/bin/pip freeze --exclude-editable | grep -v '@ file' | sed 's/+cpu//' > requirements/constraints.txt

clean:
	rm -rf ros2_ws/build ros2_ws/install ros2_ws/log
