# Two commands on a fresh machine: `make demo` (install, then train on the sample catalog and run a
# query) and `make test` (install, then run the tests). Both make a virtual environment in .venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= out

.PHONY: demo test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

demo: $(VENV)/.installed
	PATH="$(CURDIR)/$(BIN):$$PATH" ./run-training.sh local_test_data/catalog.jsonl $(OUT)
	PATH="$(CURDIR)/$(BIN):$$PATH" ./run-prediction.sh local_test_data/query.jpg $(OUT)

test: $(VENV)/.installed
	$(BIN)/python -m pytest

lint: $(VENV)/.installed
	$(BIN)/ruff check simfusion tests benchmarks *.py
	$(BIN)/ruff format --check simfusion tests benchmarks *.py

clean:
	rm -rf $(OUT)
