# Set-up and entry points. `make demo` and `make test` are the two commands of the README.
PY      ?= python3
VENV    ?= .venv
BIN      = $(VENV)/bin
# torch 2.14.1 + torchvision 0.29.1: the pair whose torchvision imports (lpips needs it); see README.
TORCH    = torch==2.14.1 torchvision==0.29.1

.PHONY: setup demo test lint clean

# the faces extra (dlib-bin, face-recognition-models: prebuilt wheel + model files, about 25 s) so that
# `make test` runs the alignment and identity tests instead of skipping them; a changed Makefile re-runs this
$(BIN)/bench: pyproject.toml Makefile
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e '.[test,faces]'
	@touch $(BIN)/bench

setup: $(BIN)/bench

demo: setup
	$(BIN)/bench run --methods im2s --transform rotate:20
	$(BIN)/bench report

test: setup
	$(BIN)/python -m pytest -q
	$(BIN)/bench zoo verify
	BIN=$(BIN) bash benchmarks/ci/regression.sh

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) runs .pytest_cache
