# Two entry points (see README): `make run` and `make test`. Both install what they need first.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: install run test lint bench clean browser

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev,notebooks]'
	@# Jupyter's jsonschema extra brings rfc3987-syntax, whose import builds a grammar for ~3 s and is
	@# paid by every `import prefect` (each CLI call, each flow run); nothing weflow uses needs it.
	$(BIN)/pip uninstall -y -q rfc3987-syntax
	touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/weflow apply data/workflows/*.yaml
	$(BIN)/weflow up --run daily_sales --run customer_revenue $(UP_FLAGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# Debian's chromium for the tests that look at pages in a real browser.
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

test: lint browser
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

bench: install
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) data/weflow.duckdb* data/runs data/out
