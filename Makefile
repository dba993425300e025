# Two commands on a fresh clone: `make demo` and `make test`. Both create .venv if missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PYTHONUNBUFFERED := 1
export MPLBACKEND := Agg

CHROMIUM ?= /usr/bin/chromium

.PHONY: install demo test test-fast lint bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --progress-bar off -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

# Debian's Chromium for the real-browser notebook test (Playwright drives it; no browser download).
$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else echo "note: $(CHROMIUM) missing; 'sudo apt-get install chromium' enables the browser test"; fi

## Run the main job end to end: execute notebooks/00_quickstart.ipynb headless.
demo: $(STAMP)
	@mkdir -p notebooks/executed figures data
	$(PY) -m jupyter nbconvert --to notebook --execute notebooks/00_quickstart.ipynb \
		--output-dir notebooks/executed --ExecutePreprocessor.timeout=1800
	@echo "executed notebook: notebooks/executed/00_quickstart.ipynb; figures in figures/"

## The whole test suite: unit tests, then every notebook in smoke mode (nbmake).
test: $(STAMP) $(CHROMIUM)
	SMOKE=1 $(PY) -m pytest tests --nbmake notebooks --durations=15

test-fast: $(STAMP)
	$(PY) -m pytest tests -x -q

lint: $(STAMP)
	$(PY) -m ruff check agentic_toolkit tests benchmarks scripts

bench: $(STAMP)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf notebooks/executed .pytest_cache
