# Shortcuts for the commands in the README; .ci/run keeps running the README's own lines.
PY := .venv/bin/python

.PHONY: setup test lint e2e bench

setup:
	python3 -m venv .venv && .venv/bin/pip install -e '.[dev]'

test:
	$(PY) -m pytest

lint:
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

e2e:
	$(PY) -m pytest -m e2e

bench:
	$(PY) bench/bench.py
