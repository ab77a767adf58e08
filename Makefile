# `make demo` and `make test` work from a fresh clone: they create .venv if missing and
# install the pinned dependencies (idempotent: skipped while pyproject.toml is unchanged).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test profile clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) train.py --overwrite --report  # a demo replaces the previous runs/demo

test: $(STAMP)
	$(PY) -m pytest -q

profile: $(STAMP)
	$(PY) -m vidgan.profile --config ucf101_st4.yaml

clean:
	rm -rf runs/demo data/synthetic
