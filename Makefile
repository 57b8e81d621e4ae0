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

# Every workload against the peers, on one core and on all of them (about 10 minutes each on 2
# cores; run it on a quiet machine): results named by the CPU's vector width, README tables.
bench: $(STAMP)
	set -e; for threads in 1 $$(nproc); do \
		name=$$($(PY) benchmarks/bench_readme.py --name-for-threads $$threads); \
		$(PY) -m logitloss bench --threads $$threads --csv benchmarks/results/$$name.csv \
			--markdown benchmarks/results/$$name.md --plot docs/$$name.png; \
	done
	$(PY) benchmarks/bench_readme.py

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
