# xserve developer commands. A fresh machine needs only Python 3.11, pip and gcc.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install xserve with its test tools

run: $(STAMP)  ## run the For You server on a local Ray with ./xserve-data
	$(VENV)/bin/xserve serve

test: $(STAMP)  ## the whole test suite (what CI runs)
	$(PY) -m pytest -q

bench: $(STAMP)  ## every benchmark, one `name value unit` line per figure
	@for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache
