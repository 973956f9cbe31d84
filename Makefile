# The two quick-start commands are `make demo` and `make test`; each installs first when needed.
# Only python3 (>= 3.11) is required; Java 17 + Maven upgrade the embedded broker to Apache Kafka.

PYTHON ?= python3
# The domain `make demo` shows: feed (default) or payments (`make demo DOMAIN=payments`).
DOMAIN ?= feed
VENV := .venv
BIN := $(VENV)/bin
# Re-install whenever pyproject.toml changes.
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install kafka prometheus demo test test-unit faults soak lint clean mlflow-ui

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "streamscore needs Python >= 3.11, found " + sys.version.split()[0])'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Apache Kafka's broker jars from Maven Central, once, into ~/.cache/streamscore/kafka-jars.
kafka: install
	$(BIN)/streamscore local fetch-kafka --pom deploy/kafka/pom.xml

# Prometheus and promtool from Debian's package, when they are missing and apt can install them
# (root): the alert-rule unit tests need promtool, `local up --with-prometheus` the server.
# Elsewhere the alert tests are skipped and say so, and the demo runs without Prometheus.
prometheus:
	@command -v promtool >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's prometheus package (promtool + server)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1 \
	    || { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1; } \
	    || echo "could not install prometheus: alert-rule tests will be skipped"; \
	  else echo "promtool not found (needs root to apt-get install prometheus): alert-rule tests will be skipped"; fi; }

# Fetching Kafka may fail on a machine without Java/Maven: the embedded stack then uses tansu,
# and the test run's header and summary say which broker the integration tests ran against.
demo: install
	-@$(MAKE) --no-print-directory kafka || echo "Apache Kafka unavailable: the demo uses tansu"
	-@$(MAKE) --no-print-directory prometheus
	STREAMSCORE_DOMAIN=$(DOMAIN) $(BIN)/streamscore demo

# One pytest run: unit, contract and doctests; integration on Apache Kafka (when it can run,
# else tansu) plus the smoke subset again on tansu. Exit 5 (no tests collected) is a failure of
# its own kind, reported as such rather than passed off as green.
test: install
	-@$(MAKE) --no-print-directory kafka || echo "Apache Kafka unavailable: integration tests fall back to tansu"
	-@$(MAKE) --no-print-directory prometheus
	$(BIN)/python -m pytest --broker=auto $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests (exit 5)"; fi; exit $$rc

# The fault kit (tests/faults): every case, the long ones too, on Apache Kafka when it can run;
# the table of what each case observed is written into docs/reliability.md. About 10 minutes.
faults: install
	-@$(MAKE) --no-print-directory kafka || echo "Apache Kafka unavailable: the fault kit runs on tansu"
	$(BIN)/python -m pytest tests/faults --broker=auto --faults --faults-report=docs/reliability.md $(PYTEST_ARGS)

# The 10-minute soak at half the rate measured in the same run (not part of `make faults`).
soak: install
	-@$(MAKE) --no-print-directory kafka || echo "Apache Kafka unavailable: the soak runs on tansu"
	$(BIN)/python -m pytest tests/faults/test_soak.py --broker=auto --faults --soak-seconds=600 --timeout=1800 $(PYTEST_ARGS)

test-unit: install
	$(BIN)/python -m pytest tests/unit tests/contract services $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check services streams tests load
	$(BIN)/ruff format --check services streams tests load
	$(BIN)/mypy

clean:
	-$(BIN)/streamscore local down
	rm -rf $(VENV) .streamscore .pytest_cache .mypy_cache .ruff_cache .hypothesis

# The MLflow UI over the embedded store (runs, registered versions, aliases).
mlflow-ui: install
	$(BIN)/streamscore models ui
