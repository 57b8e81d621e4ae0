# `make test` and `make demo` do all the set-up themselves on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.stamp-installed

.PHONY: test demo accuracy bench lint clean

$(STAMP): pyproject.toml requirements-dev.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m pytest

demo: $(STAMP)
	$(PY) -m logitloss demo

accuracy: $(STAMP)
	$(PY) benchmarks/accuracy.py

# Every workload against the peers (about 10 minutes on 2 cores; run it on a quiet machine).
bench: $(STAMP)
	$(PY) -m logitloss bench --csv benchmarks/results/bench.csv \
		--markdown benchmarks/results/bench.md --plot docs/bench.png

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
