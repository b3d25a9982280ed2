# Two entry points (see README): `make demo` and `make test`. Both create .venv/ first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.edgefuse-installed
DEMO   := demo-out

.PHONY: venv demo test test-fast test-thirdparty check-install bench-accuracy lint clean

# pyproject.toml states ranges; constraints.txt is the exact set tested, so every venv made here is that set.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	# torch first, pinned: the CPU build on this machine's disk, never a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet --disable-pip-version-check torch==2.13.0 -c constraints.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,executorch,thirdparty]' -c constraints.txt
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	bash examples/demo.sh $(DEMO)

# Two workers, one per core; a file's tests stay on one worker so its module fixtures are built once.
# The torchvision/timm matrix (15 networks exported and checked, ~10 min on 2 cores) is its own target, which
# .ci/run runs as a separate, timed step: `make test` stays well under 15 minutes.
test: $(STAMP) lint
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=12 -m "not thirdparty"

test-thirdparty: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --durations=5 -m thirdparty

# The inner loop: everything not marked slow (see tests/conftest.py), under two minutes on two cores.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 -m "not slow" --durations=5

# Installing edgefuse into an environment that already holds a user's stack (torch CPU, torchvision, timm)
# keeps their versions and gives a working `edgefuse --help` (.ci/run runs it as a timed step).
check-install:
	bash .ci/check-install

# The accuracy claims on Fashion-MNIST (README "Benchmarks"): zoo PTQ/QAT, the fusion ablation and its positions,
# the training tips, the third-party networks trained. About 3 hours on 2 cores; the data comes from Debian
# (`sudo apt-get install dataset-fashion-mnist`), nothing is downloaded. Not part of `make demo` or `make test`.
FMNIST ?= /usr/share/datasets/fashion-mnist
bench-accuracy: $(STAMP)
	@test -d $(FMNIST) || { echo "error: Fashion-MNIST is not installed: sudo apt-get install dataset-fashion-mnist" >&2; exit 2; }
	$(BIN)/python benchmarks/accuracy.py --json benchmarks/results-accuracy-fashion-mnist.json
	$(BIN)/edgefuse ablate --data fashion-mnist --fusions add,concat,se,cbam,effatt,dynamic --epochs 3 --width 0.5 \
		--runs 100 -o build/ablation-fashion-mnist --force
	cp build/ablation-fashion-mnist/ablation.json benchmarks/results-ablation-fashion-mnist.json
	$(BIN)/edgefuse ablate --data fashion-mnist --fusions add,se,cbam,effatt --positions early,late --epochs 3 \
		--width 0.5 --runs 100 -o build/ablation-positions-fashion-mnist --force
	cp build/ablation-positions-fashion-mnist/ablation.json benchmarks/results-ablation-positions-fashion-mnist.json
	$(BIN)/python benchmarks/training_tips.py --seeds 0 --json benchmarks/results-training-tips-fashion-mnist.json
	$(BIN)/python benchmarks/third_party_accuracy.py --json benchmarks/results-third-party-fashion-mnist.json

lint: $(STAMP)
	$(BIN)/ruff check edgefuse tests benchmarks examples

clean:
	rm -rf $(VENV) $(DEMO) build .pytest_cache
