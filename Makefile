# Two runtimes, one environment each (DESIGN §6): never install both into one venv.
PYTHON ?= python3.11
FLINK := .venv-flink
BEAM := .venv-beam
PIP_PIN := pip==24.3.1

.PHONY: run test test-core test-flink flink-env beam-env prometheus bench bench-backfill bench-freshness clean

run: flink-env
	$(FLINK)/bin/upm run --fresh

test: flink-env beam-env prometheus
	$(BEAM)/bin/python -m pytest -q tests/core
	$(BEAM)/bin/python -m pytest -q tests/beam
	$(FLINK)/bin/python -m pytest -q tests/core
	$(FLINK)/bin/python -m pytest -q tests/flink

test-core: flink-env prometheus
	$(FLINK)/bin/python -m pytest -q tests/core

test-flink: flink-env prometheus
	$(FLINK)/bin/python -m pytest -q tests/flink

bench: flink-env beam-env
	$(FLINK)/bin/python bench/throughput.py
	$(FLINK)/bin/python bench/cluster_scaling.py
	$(BEAM)/bin/python bench/backfill.py
	$(FLINK)/bin/python bench/freshness.py
	$(FLINK)/bin/python bench/tenants_scale.py
	$(FLINK)/bin/python bench/report.py --markdown bench/results/bench.md

bench-backfill: beam-env
	$(BEAM)/bin/python bench/backfill.py

bench-freshness: flink-env
	$(FLINK)/bin/python bench/freshness.py

flink-env: $(FLINK)/.installed
beam-env: $(BEAM)/.installed

# The Prometheus server and promtool (`upm flink up --prometheus`, the monitoring tests): the
# one on PATH, else Debian's package (a server binary, not a Python package, so not in a venv).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
prometheus:
	@command -v prometheus >/dev/null && command -v promtool >/dev/null || { \
	  export DEBIAN_FRONTEND=noninteractive; \
	  $(SUDO) apt-get install -y -q --no-install-recommends prometheus || \
	  { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q --no-install-recommends prometheus; }; }

# The Flink Kafka connector is not in PyFlink's package: fetch_jars takes the two jars from a
# pinned PyPI redistribution of the Apache jars and checks transforms/flink/kafka-jars.sha256.
# The job's Java steps (transforms/flink/java/) are compiled with the JDK's javac against
# PyFlink's jars (transforms/flink/java_steps.py; again at run time if a source changed).
$(FLINK)/.installed: pyproject.toml constraints/flink.txt transforms/flink/kafka-jars.sha256
	$(PYTHON) -m venv $(FLINK)
	$(FLINK)/bin/python -m pip install -q $(PIP_PIN)
	$(FLINK)/bin/python -m pip install -q -c constraints/flink.txt -e '.[flink,dev,bench]'
	$(FLINK)/bin/python -m transforms.flink.fetch_jars
	$(FLINK)/bin/python -m transforms.flink.java_steps
	touch $@

$(BEAM)/.installed: pyproject.toml constraints/beam.txt
	$(PYTHON) -m venv $(BEAM)
	$(BEAM)/bin/python -m pip install -q $(PIP_PIN)
	$(BEAM)/bin/python -m pip install -q -c constraints/beam.txt -e '.[beam,dev]'
	touch $@

clean:
	rm -rf $(FLINK) $(BEAM) upm-data
