# slmkit — every entry point a person or CI uses. Each target installs what it needs and can be
# run again safely.

SHELL := /bin/bash
.DEFAULT_GOAL := help

# One target directory for the core, the Python wheel and the Node addon: llama.cpp is the
# slow part of every build, and sharing the directory compiles it once.
export CARGO_TARGET_DIR ?= $(CURDIR)/target
export CARGO_TERM_COLOR ?= never

# redis-server: the [shared] tests (cli/tests/shared.rs) start their own instances on loopback.
APT_PACKAGES := cmake clang libclang-dev redis-server

.PHONY: help setup demo test test-rust test-python test-libraries test-node test-e2e test-stress route-score lint bench bench-soak fuzz eval-metagpt fixtures clean models

# Real models the tests run on, pulled through `slmkit pull` into the Hugging Face cache
# (~/.cache/huggingface/hub, or $$HF_HUB_CACHE) once and verified by sha256.
TEST_MODELS := smollm2-135m-instruct qwen2.5-coder-0.5b-instruct gemma-3-270m
DEMO_MODELS := qwen2.5-coder-0.5b-instruct qwen2.5-coder-1.5b-instruct
SLMKIT := cargo run -q -p slmkit-cli --

help:
	@echo "make demo     set up and run the main job"
	@echo "make test     set up and run every test suite"
	@echo "make lint     clippy -D warnings, rustfmt and rustdoc checks"
	@echo "make bench    benchmarks (not part of make test)"
	@echo "make test-stress  the Python and Node suites 5 times each with every core loaded (~30-40 min)"
	@echo "make bench-soak  slmkit serve under open-loop load with and without hostile clients (~3 min)"
	@echo "make fuzz     the fuzz targets, FUZZ_SECONDS each (default 600; nightly; not part of make test)"
	@echo "make eval-metagpt  real MetaGPT runs on the real models (plain and hints, 7-21 min each; not part of make test)"
	@echo "make models   pull the real models the tests run on (cached)"
	@echo "make fixtures regenerate the tiny GGUF test models (needs Python)"

## Install the system packages llama.cpp's build needs (cmake; clang and libclang for bindgen),
## and redis-server for the shared-store tests.
setup:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi
	@command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)"; exit 1; }
	@# The bindings' test suites need a Python with venv and a Node.js with npm.
	@extra=""; python3 -c 'import venv, ensurepip' 2>/dev/null || extra="$$extra python3-venv"; \
	command -v npm >/dev/null || extra="$$extra nodejs npm"; \
	if [ -n "$$extra" ]; then \
	  echo "installing:$$extra"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$extra >/dev/null; \
	fi

demo: setup
	$(SLMKIT) pull $(DEMO_MODELS)
	$(SLMKIT) demo

test: setup test-rust route-score test-python test-libraries test-node test-e2e lint

## Pull the real models the tests run on into the Hugging Face cache through `slmkit pull` (a
## no-op once cached; every file verified by sha256). See "Models: pull by name" in the README.
models: setup
	$(SLMKIT) pull $(TEST_MODELS)

test-rust: models
	cargo test --workspace

## pytest against the real openai package, then mypy on the examples (venv in .venv).
test-python:
	bash bindings-python/test.sh

## slmkit.OpenAI inside instructor, langchain-openai, pydantic-ai, openai-agents and llama-index,
## on both tiers in-process (pinned in tests/libraries/python/requirements.lock; the venv is
## made once under ~/.cache/slmkit/, keyed by the lock's hash).
test-libraries:
	bash tests/libraries/python/run.sh

## node --test against the real openai npm package, and the TypeScript drop-in check.
test-node:
	bash bindings-node/test.sh

## slmkit serve on port 0 against real clients: openai (Python and npm), LangChain, and MetaGPT
## 0.8.2 itself (in its own cached venv, tests/e2e/metagpt/install.sh).
test-e2e: test-python test-node
	bash tests/e2e/run.sh

## The Python and Node suites STRESS_RUNS times each (default 5) while stress-ng (apt-installed
## if missing, else busy loops) loads every core; fails unless every run passes. About 30-40 min
## on 2 cores. Logs in $(CARGO_TARGET_DIR)/test-stress.
test-stress: setup
	bash scripts/test_stress.sh

## cargo-fuzz (installed if missing) on nightly: request JSON, the remote SSE parser, the config
## TOML, the GGUF pre-flight check, the tool-call parser; FUZZ_SECONDS each (default 600).
fuzz:
	bash scripts/fuzz.sh

## The router's score on every labelled set: the shared dev set, its held-out set and the MetaGPT
## splits (core/tests/routing.rs asserts the thresholds).
route-score:
	for set in devset heldout metagpt-dev metagpt-heldout metagpt-fresh; do \
		echo "== $$set"; cargo run -q -p slmkit-cli -- route-score tests/routing/$$set.jsonl || exit 1; done

lint:
	python3 scripts/module_graph.py >/dev/null
	cargo clippy --workspace --all-targets -- -D warnings
	cargo fmt --all -- --check
	RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps

## Benchmarks (not part of make test; see bench/README.md). The bench venvs are made once; the
## real models are pulled (and cached) through slmkit pull. Every figure is a median with its
## spread; comparisons run one right after the other, on the same GGUF files.
BENCH_MODELS := qwen2.5-coder-0.5b-instruct qwen2.5-coder-1.5b-instruct

bench: setup
	cargo bench -p slmkit --bench routing
	cargo bench -p slmkit --bench routing_sim
	@# The 72-task Qwen2.5-Coder-0.5B eval replayed through the adaptive router, with the 1.5B
	@# stand-in's own answers to the same tasks as the LLM's outcomes.
	cargo bench -p slmkit --bench routing_replay -- bench/results/eval-qwen2.5-coder-0.5b-pipeline.json \
	  bench/results/eval-qwen2.5-coder-1.5b-llm-only.json \
	  --out bench/results/routing-replay-$$(date +%F).md
	cargo bench -p slmkit --bench overhead
	@# The pool balancer: one remote backend against a pool of 3 test servers, and the pick alone.
	cargo bench -p slmkit --bench pool | tee bench/results/pool-$$(date +%F).md
	@# Built from source without -march=native and without pip's wheel cache: a wheel built on
	@# another machine's CPU dies here with an illegal instruction on its first decode.
	[ -x bench/.venv-llamacpp/bin/python ] || { python3 -m venv bench/.venv-llamacpp && \
	  CMAKE_ARGS="-DGGML_NATIVE=OFF" bench/.venv-llamacpp/bin/pip install -q --no-cache-dir \
	    'llama-cpp-python==0.3.36' -r scripts/requirements-fixtures.txt; }
	$(SLMKIT) pull $(BENCH_MODELS)
	model05=$$($(SLMKIT) pull qwen2.5-coder-0.5b-instruct 2>/dev/null) && \
	  cargo bench -p slmkit --bench decode_shapes -- "$$model05" 2
	for name in $(BENCH_MODELS); do \
	  model=$$($(SLMKIT) pull $$name 2>/dev/null) && \
	  cargo bench -p slmkit --bench engine -- "$$model" 2 && \
	  bench/.venv-llamacpp/bin/python bench/llama_cpp_python.py "$$model" 2 || exit 1; \
	done
	cargo build -p slmkit-cli -p slmkit-testserver
	[ -x .venv/bin/python ] || bash bindings-python/test.sh
	[ -x bench/.venv-litellm/bin/litellm ] || { python3 -m venv bench/.venv-litellm && \
	  bench/.venv-litellm/bin/pip install -q 'litellm[proxy]==1.106.2'; }
	bench/.venv-litellm/bin/python -c 'import redis, soundfile' 2>/dev/null || bench/.venv-litellm/bin/pip install -q redis soundfile
	@# [shared] on a redis-server it starts on loopback: L1, L2 and plain GET; LiteLLM's Redis cache hit
	@# against slmkit serve's; one serve process against two. The table goes to bench/results/.
	mkdir -p bench/results && cargo bench -p slmkit-cli --bench shared -- --out bench/results/shared-$$(date +%F).md
	.venv/bin/python bench/serve_overhead.py
	@# The Python drop-in beside the native client: import time and per-call overhead.
	.venv/bin/python bench/dropin_python.py
	@# The wheel for bench/.venv-litellm, in test.sh's dev profile so llama.cpp is not compiled again. No
	@# auditwheel repair: it patches the cargo artifact in place, which breaks the next build and maturin develop.
	.venv/bin/maturin build --quiet -m bindings-python/Cargo.toml --profile dev --auditwheel skip \
	  -o $(CARGO_TARGET_DIR)/wheels
	bench/.venv-litellm/bin/pip install -q --no-deps --force-reinstall "$$(ls -t $(CARGO_TARGET_DIR)/wheels/slmkit-*.whl | head -n1)"
	bench/.venv-litellm/bin/python bindings-python/bench.py
	[ -d bindings-node/node_modules ] || bash bindings-node/test.sh
	node bindings-node/bench.mjs
	$(MAKE) bench-soak

## slmkit serve at 200 req/s for 60 s against the loopback test server, with and without 10%
## hostile requests; writes bench/results/soak-DATE.md. About 3 minutes. Standard-library Python.
bench-soak:
	cargo build -p slmkit-cli -p slmkit-testserver
	python3 bench/soak.py

## MetaGPT's generate_repo (PRD, design, tasks) through slmkit serve with Qwen2.5-Coder-0.5B as the
## SLM and the 1.5B standing in for the LLM, with and without the action as a routing hint; writes
## bench/results/metagpt-DATE.md from the ledgers. CPU heavy (niced); not part of make test.
eval-metagpt: setup
	bash bench/metagpt_eval.sh

fixtures:
	python3 -m venv .venv-fixtures && .venv-fixtures/bin/pip install -q -r scripts/requirements-fixtures.txt
	.venv-fixtures/bin/python scripts/gen_tiny_gguf.py --out core/tests/fixtures

clean:
	cargo clean
