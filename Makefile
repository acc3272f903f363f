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
# Two test files at a time (pytest-xdist, whole files: a module's fixtures stay shared; the
# tests mostly wait on servers, so two fit on two cores), each worker under a short base temp
# (PostgreSQL's socket paths must stay under 107 bytes); then the Celery cluster's tests alone:
# they start a dozen Airflow processes and want the machine to themselves.
# pytest exits 5 when it collected no test: that fails here too.
test: setup lint
	base=$$(mktemp -d /tmp/ot.XXXXXX) && \
	  $(VENV)/python -m pytest tests -q -p no:cacheprovider -m "not cluster" -n 2 --dist loadfile \
	    --basetemp=$$base --durations=30 && rm -rf $$base
	$(VENV)/python -m pytest tests -q -p no:cacheprovider -m cluster --durations=10

bench: setup
	$(VENV)/python bench/bench_parse.py
	$(VENV)/python bench/bench_release.py
	$(VENV)/python bench/bench_backup.py
	$(VENV)/python bench/bench_drill.py
