# Everything runs from the project's own virtualenv in .venv.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
ARGS ?=

.PHONY: venv test demo bench eval clean

venv: $(BIN)/streamrec

# Re-install when the dependency list changes.
$(BIN)/streamrec: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

test: venv
	$(BIN)/python -m pytest -q

demo: venv
	$(BIN)/streamrec demo $(ARGS)

bench: venv
	$(BIN)/streamrec bench $(ARGS)

eval: venv
	$(BIN)/streamrec eval $(ARGS)

# clean keeps .venv (slow to rebuild); `rm -rf .venv` for a full reset.
clean:
	rm -rf build dist *.egg-info .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
