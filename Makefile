# Two commands matter: `make demo` and `make test`. Everything else is a step they take.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck unit e2e setup r clean

$(STAMP): requirements.txt constraints.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -r requirements.txt -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# R notebooks run through Debian's Rscript; installed only where it is missing.
r:
	@command -v Rscript >/dev/null 2>&1 || { \
	  echo "installing R (r-base-core, r-cran-jsonlite) from Debian"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq r-base-core r-cran-jsonlite >/dev/null; }

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -m "not e2e and not faults" -q

test: $(STAMP) r lint typecheck
	$(BIN)/pytest -q

demo: $(STAMP) r
	$(BIN)/dsbridge demo

clean:
	rm -rf $(VENV) .dsbridge .pytest_cache .mypy_cache .ruff_cache
