# Everything runs from the project's own virtualenv in .venv.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
ARGS ?=
# The browser tests drive Debian's Chromium through Playwright (no browser downloads).
CHROMIUM ?= /usr/bin/chromium

.PHONY: venv test chromium rabbitmq lint-containers demo bench eval clean

venv: $(BIN)/streamrec

# Re-install when the dependency list changes.
$(BIN)/streamrec: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

# The whole suite. pytest's exit code 5 (no tests collected) fails like any other.
test: chromium rabbitmq venv
	@STREAMREC_CHROMIUM=$(CHROMIUM) $(BIN)/python -m pytest -q --durations=15; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; exit $$rc

# Debian's chromium package when the browser is missing: installed for root, named otherwise.
chromium:
	@if [ ! -x "$(CHROMIUM)" ]; then \
	    if [ "$$(id -u)" -ne 0 ]; then \
	        echo "make test: the browser tests need Chromium at $(CHROMIUM), which is missing." >&2; \
	        echo "  Install it as root:  sudo apt-get update && sudo apt-get install -y chromium" >&2; \
	        echo "  or point to another build:  make test CHROMIUM=/path/to/chromium" >&2; \
	        exit 1; \
	    fi; \
	    echo "make test: installing Debian's chromium package (apt-get)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	    if [ ! -x "$(CHROMIUM)" ]; then \
	        echo "make test: still no Chromium at $(CHROMIUM) after installing the chromium package;" \
	             "run make test CHROMIUM=/usr/bin/chromium" >&2; \
	        exit 1; \
	    fi; \
	fi

# Static checks of Dockerfile and compose.yaml (no container engine needed); also in `make test`.
lint-containers: venv
	$(BIN)/python -m pytest -q tests/test_containers.py

demo: venv
	$(BIN)/streamrec demo $(ARGS)

bench: venv
	$(BIN)/streamrec bench $(ARGS)

eval: venv
	$(BIN)/streamrec eval $(ARGS)

# tests/test_rabbitmq.py runs a RabbitMQ node of its own (free loopback ports, never the
# system service on 5672) from Debian's rabbitmq-server package: installed for root when
# missing, named otherwise.
RABBITMQ_SERVER := /usr/lib/rabbitmq/bin/rabbitmq-server
rabbitmq:
	@if [ ! -x "$(RABBITMQ_SERVER)" ]; then \
	    if [ "$$(id -u)" -ne 0 ]; then \
	        echo "make test: the RabbitMQ tests need Debian's rabbitmq-server ($(RABBITMQ_SERVER)), which is missing." >&2; \
	        echo "  Install it as root:  sudo apt-get update && sudo apt-get install -y rabbitmq-server" >&2; \
	        exit 1; \
	    fi; \
	    echo "make test: installing Debian's rabbitmq-server package (apt-get)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server; \
	fi

# clean keeps .venv (slow to rebuild); `rm -rf .venv` for a full reset.
clean:
	rm -rf build dist *.egg-info .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
