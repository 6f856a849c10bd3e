# make run   - the main job: train and test a SoftPool 3D ResNet-10 on SynthMotion (generated on first use)
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
	$(PY) -m pip install -e '.[test,export]'
	touch $(STAMP)

install: $(STAMP)
	$(PY) -c "from softpool3d.ops import cpp; import sys; ok = cpp.load(); print('C++ CPU kernel', cpp.capability(), 'ready' if ok else 'NOT built'); sys.exit(not ok)"

MAIN_CONFIG := configs/synthmotion.yaml
MAIN_RUN    := runs/synthmotion_r3d_10_soft

run: install
	$(VENV)/bin/softpool3d train --config $(MAIN_CONFIG)
	$(VENV)/bin/softpool3d test --config $(MAIN_CONFIG) --checkpoint $(MAIN_RUN)/last.pt

bench: install
	$(VENV)/bin/softpool3d benchmark-ops

test: install
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
