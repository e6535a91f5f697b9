# Two entry points for people: `make dev` (the pipeline on embedded services) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed

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

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install -q -e '.[dev,bench]'
	touch $(BENCH_STAMP)

# Every benchmark (pipeline, embedding, retrieval; purge when bench/purge.py exists), each on fresh embedded
# services: bench/results/<name>.json (+ .log), one <name>.png chart each and summary.md with the machine's cores
# and library versions. `make bench SMOKE=1` runs the tiny sizes; `make bench ONLY=embedding,retrieval` a subset.
bench: $(BENCH_STAMP)
	$(PY) bench/report.py run $(if $(SMOKE),--smoke) $(if $(ONLY),--only $(ONLY))

clean:
	rm -rf $(VENV) .amem

.PHONY: bench-purge
bench-purge: install
	$(PY) bench/purge.py
