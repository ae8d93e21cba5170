# Two entry points (see README): `make run` and `make test`. Both install what they need first.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: install bytecode run test lint docs bench bench-peers clean system

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev,notebooks]'
	@# Jupyter's jsonschema extra brings rfc3987-syntax, whose import builds a grammar for ~3 s and is
	@# paid by every `import prefect` (each CLI call, each flow run); nothing weflow uses needs it.
	$(BIN)/pip uninstall -y -q rfc3987-syntax
	touch $@

install: $(VENV)/.installed

# weflow is installed editable, so pip compiles none of its modules, and where PYTHONDONTWRITEBYTECODE
# is set (this machine and CI) no process writes them either: every `weflow` command, flow process and
# worker would compile weflow's sources again (~0.3 s of CPU each). compileall writes only what changed.
bytecode: install
	$(BIN)/python -m compileall -q -j 0 weflow flows benchmarks

run: bytecode
	$(BIN)/weflow apply data/workflows/*.yaml
	$(BIN)/weflow up --run daily_sales --run customer_revenue $(UP_FLAGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# Debian's packages the tests start for real: chromium (pages in a real browser) and PostgreSQL's
# server (the scale-out tests run Prefect's server on it); one apt-get update, only if one is missing.
SYSTEM_PACKAGES := $(if $(shell command -v chromium),,chromium) \
	$(if $(wildcard /usr/lib/postgresql/*/bin/postgres),,postgresql)
system:
	@$(if $(strip $(SYSTEM_PACKAGES)),apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_PACKAGES) >/dev/null,true)

test: lint system docs bytecode
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder

# The documentation site (mkdocs.yml, docs/) into site/, strictly: a broken link or reference fails.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir site

bench: bytecode
	$(BIN)/python -m benchmarks

# The same TPC-H pipelines in Dagster, Kedro, Hamilton and hand-written Prefect next to weflow: builds
# each peer's own environment in .peers/<name>/ (benchmarks/peers/requirements-*.txt) if missing, then
# measures and writes BENCHMARKS.md's peers section. `make test` never builds them.
bench-peers: install
	$(BIN)/python -m benchmarks --only peers

clean:
	rm -rf $(VENV) data/weflow.duckdb* data/runs data/out
