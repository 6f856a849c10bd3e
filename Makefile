# make run   - the main job (until the training tools land: the operator benchmark)
# make test  - the test suite
# make install - create .venv, install the package and prebuild the C++ kernel
# Each target creates .venv when it is missing, so a fresh clone needs nothing else.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install run test bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -e '.[test]'
	touch $(STAMP)

install: $(STAMP)
	$(PY) -c "from softpool3d.ops import cpu; import sys; ok = cpu.load(); print('C++ CPU kernel', cpu.capability(), 'ready' if ok else 'NOT built'); sys.exit(not ok)"

run: install
	$(PY) tools/benchmark_ops.py --quick

bench: install
	$(PY) tools/benchmark_ops.py

test: install
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
