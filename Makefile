# The two commands a newcomer runs: `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# A CPU build of torch 2.13.0 is pinned here so pip never pulls the multi-GB CUDA wheels;
# pyproject.toml only asks for torch>=2.4.
TORCH_PIN := torch==2.13.0

.PHONY: demo test install install-test clean

$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "$(PYTHON) not found; run 'make PYTHON=python3 ...'"; exit 1; }
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_PIN)
	$(PIP) install -q -e ".[keras]"
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install -q $(TORCH_PIN) -e ".[test]"
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

demo: install
	$(VENV)/bin/optarena claims --quick --out results/ --store results/optarena.sqlite

test: install-test
	# Two workers on two cores: one BLAS thread each, or they oversubscribe the machine.
	KERAS_BACKEND=torch OMP_NUM_THREADS=1 $(PY) -m pytest -n 2 -q

clean:
	rm -rf $(VENV) results .pytest_cache
