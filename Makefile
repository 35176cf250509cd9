# The two set-up commands of the README: `make demo` and `make test`. Both build .venv from the
# pinned constraints on first use (Python 3.11+ and a C compiler-free install: wheels only).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint unit bench faults clean

$(STAMP): pyproject.toml constraints.txt
	@$(PY) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed (set PY=python3.11)")'
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/hub demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy hub drivers rules api simulators dashboards bench
	$(BIN)/python -m pytest -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check . || true
	$(BIN)/mypy hub drivers rules api simulators dashboards bench

bench: $(STAMP)
	$(BIN)/python -m bench

# The fault tests in their full form (make test runs the short form); docs/faults.md.
faults: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider -m fault --full-faults

clean:
	rm -rf $(VENV) .demo .pytest_cache .mypy_cache .ruff_cache
