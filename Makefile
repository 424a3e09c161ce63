# The README's two commands: `make demo` and `make test`. Both set up .venv first.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch first, pinned: this exact CPU wheel lies on the project's machines, while an
# unpinned torch (or one pulled in by a dependency) is a CUDA build of several GB.
TORCH := torch==2.13.0
DEMO_RUN := runs/demo-fast

.PHONY: setup demo test lint bench browser-deps clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[all,dev]'
	touch $@

# Chromium for the browser tests comes from Debian, since Playwright cannot download
# its own browser here. Installed only when missing.
browser-deps:
	@if [ ! -x /usr/bin/chromium ]; then \
	  echo "installing chromium (Debian) for the browser tests"; \
	  apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null; \
	fi

# The whole journey on a fresh machine: data, training, evaluation with a report, ONNX export,
# and a person's digits: photos of MNIST test digits rendered on paper, then predicted.
demo: setup
	$(BIN)/mnistkit data fetch
	$(BIN)/mnistkit data info
	$(BIN)/mnistkit data show --n 25 --out runs/grid.png
	$(BIN)/mnistkit train --recipe fast --out $(DEMO_RUN) --overwrite
	$(BIN)/mnistkit evaluate $(DEMO_RUN) --report
	$(BIN)/mnistkit export $(DEMO_RUN)
	$(BIN)/python benchmarks/handwriting.py $(DEMO_RUN) --n 500 --save runs/demo-photos
	$(BIN)/mnistkit predict $(DEMO_RUN) --backend onnx $$(ls -d runs/demo-photos/* | head -8)
	@echo "report: $(DEMO_RUN)/report.html   draw digits yourself: $(BIN)/mnistkit serve $(DEMO_RUN)"

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy src

test: setup browser-deps lint
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/mnistkit bench train --recipe fast --seeds 5

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
