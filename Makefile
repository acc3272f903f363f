# The README's two commands: `make demo` and `make test`.
.PHONY: setup demo demo-down test lint format bench

VENV := .venv/bin

setup:
	scripts/setup

# Installs what is missing, starts the sandbox and Airflow, releases a healthy and a faulty
# version through the REST API, and leaves everything running.
demo: setup
	PYTHONPATH=plugins $(VENV)/python -m opsdag.dev.demo up

demo-down:
	PYTHONPATH=plugins $(VENV)/python -m opsdag.dev.demo down

lint:
	$(VENV)/ruff check .
	$(VENV)/ruff format --check .

format:
	$(VENV)/ruff check --fix .
	$(VENV)/ruff format .

# Installs what is missing, lints, then runs every test (unit, integration, end to end).
# pytest exits 5 when it collected no test: that fails here too.
test: setup lint
	$(VENV)/python -m pytest tests -q -p no:cacheprovider --durations=30

bench: setup
	$(VENV)/python bench/bench_parse.py
	$(VENV)/python bench/bench_release.py
	$(VENV)/python bench/bench_backup.py
	$(VENV)/python bench/bench_drill.py
