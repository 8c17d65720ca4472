# Two commands for a new machine: `make run` serves the API, `make test` runs the tests.
# Both create the virtualenv from the pinned, hashed lock files on first use.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
HOST   ?= 127.0.0.1
PORT   ?= 8000
PYTEST_ARGS ?=

.PHONY: run test lint format lock bench soak clean system-deps

system-deps: ## Debian packages: compiler + cmake (llama.cpp), redis-server, chromium
	bash scripts/install-system-deps.sh

$(VENV)/.installed: requirements.txt requirements-dev.txt scripts/install-venv.sh scripts/llama-cmake-args.sh
	bash scripts/install-system-deps.sh
	bash scripts/install-venv.sh $(VENV) $(PYTHON) requirements.txt requirements-dev.txt
	touch $@

run: $(VENV)/.installed ## serve on http://$(HOST):$(PORT) (embedded model unless OPENAI_* is set)
	$(PY) -m chat --host $(HOST) --port $(PORT)

test: system-deps $(VENV)/.installed ## the whole test suite
	$(PY) scripts/llama-smoke.py
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed ## ruff lint and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV)/.installed
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

lock: ## re-pin requirements*.txt from requirements*.in, with hashes
	$(PY) -m piptools compile --quiet --generate-hashes --allow-unsafe --strip-extras \
		--no-emit-index-url --no-emit-find-links -o requirements.txt requirements.in
	$(PY) -m piptools compile --quiet --generate-hashes --allow-unsafe --strip-extras \
		--no-emit-index-url --no-emit-find-links -o requirements-dev.txt requirements-dev.in

bench: $(VENV)/.installed ## service vs naive vs bare ASGI: one table and docs/bench.png (< 10 min)
	@command -v hey >/dev/null && command -v wrk >/dev/null || \
		{ apt-get update -qq && apt-get install -y -qq --no-install-recommends hey wrk >/dev/null; }
	$(PY) -m bench.run $(BENCH_ARGS)

soak: $(VENV)/.installed ## 10 min under 429s, drops and reconnects: leak checks, docs/soak.png
	$(PY) -m bench.soak $(SOAK_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis artifacts
