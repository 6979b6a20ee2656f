# The two commands of the README: `make run` and `make test`. The rest are helpers.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements/*.txt | md5sum | cut -c1-12)

.PHONY: run test lint format bench demo-image services docker-engine browser clean

$(STAMP):
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements/dev.txt
	rm -f $(VENV)/.installed-* && touch $(STAMP)

run: $(STAMP)
	scripts/run.sh

test: $(STAMP) services docker-engine demo-image browser
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest $(PYTEST_ARGS)

services:
	scripts/ensure-services.sh

browser:
	scripts/browser.sh

docker-engine:
	scripts/docker-engine.sh
	scripts/lab-firewall.sh

demo-image: docker-engine
	scripts/demo-image.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: $(STAMP) services
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(PY) bench/run.py
	@for script in bench/*_bench.py; do [ -e "$$script" ] && $(PY) "$$script"; done; true

clean:
	rm -rf var .pytest_cache .ruff_cache
