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

# tests/test_rabbitmq.py runs a RabbitMQ node of its own (free loopback ports, never the
# system service on 5672) from Debian's rabbitmq-server package: installed when missing.
RABBITMQ_SERVER := /usr/lib/rabbitmq/bin/rabbitmq-server
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
test: $(RABBITMQ_SERVER)
$(RABBITMQ_SERVER):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq rabbitmq-server

# clean keeps .venv (slow to rebuild); `rm -rf .venv` for a full reset.
clean:
	rm -rf build dist *.egg-info .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
