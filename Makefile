# Reproduce the shipped model and the results page. Run `bash scripts/setup.sh dev` first
# (or use the .venv it makes: `make model PY=.venv/bin/python`).
PY ?= python3
# The default variant and its training length, chosen by subject-wise cross-validation (docs/results.md).
DEFAULT_MODEL ?= bilm
EPOCHS ?= 30
# Its cross-validation run (runs/cv/NAME), used by `make results`.
DEFAULT_CV ?= bilm_e30_last
CV_FOLDS ?= 3
export OMP_NUM_THREADS ?= 1

.PHONY: model model-tcn results cv streamed test test-fast lint demo example firmware own-data-example bench-runtime

# Train the default variant on all 21 training users (last epoch kept), export it, ship it.
model:
	$(PY) -m training.cli fit --model $(DEFAULT_MODEL) --set train_all=true --set epochs=$(EPOCHS) --set progress=false --out runs/ship --force
	$(PY) -m export.cli runs/ship/model.pt --out edge/models/default --force
	cp runs/ship/metrics.json edge/models/default/training_report.json
	cp runs/ship/model.pt edge/models/default/model.pt   # its torch checkpoint, for `har-train fit --init default`

# The Modern TCN bundle, Pi-sized (hidden 32), mount-aligned, the same recipe as its CV run (docs/results.md).
TCN_MODEL ?= tcn_physics_h32
TCN_EPOCHS ?= 30
model-tcn:
	$(PY) -m training.cli fit --model $(TCN_MODEL) --set train_all=true --set epochs=$(TCN_EPOCHS) --set progress=false --out runs/ship_tcn --force
	$(PY) -m export.cli runs/ship_tcn/model.pt --out edge/models/modern_tcn --force
	cp runs/ship_tcn/metrics.json edge/models/modern_tcn/training_report.json
	cp runs/ship_tcn/model.pt edge/models/modern_tcn/model.pt   # its torch checkpoint, for `har-train fit --init`

# Subject-wise 3-fold cross-validation of every compared variant, exactly as measured for docs/results.md
# (1 thread each, one after another; each run's seconds per epoch are in docs/results.md). Each run is a named
# config, training/configs/cv/NAME.json -> runs/cv/NAME; runs made before mount alignment became the default, or
# to compare without it, say "align_mount": false there; runs made before select_epoch=last became the default say
# "select_epoch": "best". One run: make cv CV_RUNS=bilm_e30_last
CV = $(PY) -m training.cli cv --folds $(CV_FOLDS) --set num_threads=1 --set progress=false
CV_RUNS ?= $(basename $(notdir $(wildcard training/configs/cv/*.json)))
cv:
	for run in $(CV_RUNS); do $(CV) --config training/configs/cv/$$run.json --out runs/cv/$$run || exit 1; done

# Streamed first-session accuracy (the headline) of the honest runs; writes runs/cv/NAME/streamed_*.json.
STREAMED = $(PY) scripts/streamed_cv.py --quiet
streamed:
	$(STREAMED) --choose-smoothing --posture --compare-rises --posture-out runs/cv/$(DEFAULT_CV)/posture.json runs/cv/$(DEFAULT_CV) runs/cv/$(DEFAULT_CV)_seed1 runs/cv/$(DEFAULT_CV)_seed2
	$(STREAMED) runs/cv/bilm_e30_trans
	$(STREAMED) --posture --compare-rises --posture-out runs/cv/tcn_physics_h32_e30_last/posture.json runs/cv/tcn_physics_h32_e30_last runs/cv/tcn_physics_h32_e30_last_seed1 runs/cv/tcn_physics_h32_e30_last_seed2
	# int8 against fp32 on the same streams, each fold read by the rule its fp32 (torch) streams gave above
	for run in $(DEFAULT_CV) tcn_physics_h32_e30_last; do \
	  for k in 0 1 2; do $(PY) -m export.cli runs/cv/$$run/fold_$$k/model.pt --out runs/cv/$$run/fold_$$k/bundle --force || exit 1; done; \
	  for p in fp32 int8; do $(STREAMED) --backend tflite --precision $$p --posture --posture-rules torch_fp32 runs/cv/$$run || exit 1; done; \
	done

# docs/results.md from the CV runs, the shipped bundle, benchmarks and a held-out replay.
results: streamed
	$(PY) scripts/results.py --default $(DEFAULT_CV)

example:
	$(PY) scripts/make_example.py

firmware:
	$(MAKE) -C firmware_bridge firmware

test:
	bash scripts/test.sh

# The suite without the tests marked slow (pty streams, brokers, export, training) or firmware (AVR
# toolchain, qemu): under a minute, for the edit-test loop. CI runs everything (`make test`).
test-fast:
	$(PY) -m pytest -q -m "not slow and not firmware"

# ruff and mypy as configured in pyproject.toml (strict on firmware_bridge and edge); CI runs it first.
lint:
	$(PY) -m ruff check .
	$(PY) -m mypy

demo:
	bash scripts/demo.sh

# The lean runtime against the issue's baseline (423392d), side by side: start-up, memory, replay, stage costs,
# labels, live through the virtual device (docs/results.md, "Lean runtime"; about 8 minutes).
bench-runtime:
	$(PY) scripts/bench_runtime.py --repeats 5 --live-seconds 40 --json docs/figures/bench_runtime.json

# The worked example of docs/datasets.md: record (virtual device), label, train a 7-class model, export, replay.
own-data-example:
	PYTHON=$(PY) scripts/own_data_example.sh runs/own_data_example "1 3 5"
