# Two entry points for people: `make dev` (the pipeline on embedded services) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install dev test bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: pip then takes the CPU build instead of a multi-GB CUDA one.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

dev: install
	$(VENV)/bin/amem dev

test: install
	$(VENV)/bin/pytest

bench: install
	$(PY) bench/pipeline.py

clean:
	rm -rf $(VENV) .amem

.PHONY: bench-purge
bench-purge: install
	$(PY) bench/purge.py
