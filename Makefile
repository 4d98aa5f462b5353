# Two commands a newcomer needs: `make run` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install run test lint bench bench-quick bench-test soak

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	if command -v npm >/dev/null; then (cd tests/node && npm install --no-audit --no-fund --silent); fi
	touch $@

install: $(VENV)/.installed

run: install
	$(VENV)/bin/rtgate serve -c etc/config.yaml

lint: install
	$(VENV)/bin/ruff check rtgate tests $(wildcard bench)
	$(VENV)/bin/ruff format --check rtgate tests $(wildcard bench)
	$(VENV)/bin/mypy

test: install lint
	$(VENV)/bin/pytest

# The benchmark tools' smoke tests (a minute or more: they run every stage briefly).
bench-test: install
	$(PY) -m pip install -q -e '.[dev,bench]'
	$(VENV)/bin/pytest -m bench

# The bench targets add the optional 'bench' extra (matplotlib, for the chart); tests never need it.
bench: install
	$(PY) -m pip install -q -e '.[dev,bench]'
	bash bench/install_peers.sh
	$(PY) bench/run_all.py

bench-quick: install
	$(PY) -m pip install -q -e '.[dev,bench]'
	$(PY) bench/run_all.py --quick

soak: install
	$(PY) bench/soak.py
