# The README's two commands: `make demo` (arrives with the sandbox) and `make test`.
.PHONY: setup test lint format bench

VENV := .venv/bin

setup:
	scripts/setup

lint:
	$(VENV)/ruff check .
	$(VENV)/ruff format --check .

format:
	$(VENV)/ruff check --fix .
	$(VENV)/ruff format .

# Installs what is missing, lints, then runs every test (unit, integration, end to end).
# pytest exits 5 when it collected no test: that fails here too.
test: setup lint
	$(VENV)/python -m pytest tests -q -p no:cacheprovider

bench: setup
	$(VENV)/python bench/bench_parse.py
