# paperzoo workspace targets. `make demo` and `make test` do their own set-up.
SHELL := /bin/bash
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
RUN := $(UV) run --frozen --all-packages
KEY ?= wsd

.PHONY: setup demo test lint test-fast test-slow test-peers peers testbed check check-all report bench build clean

setup:  ## uv (bootstrapped with pip if missing), the locked environment, and the Debian data packages
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --all-packages --frozen
	@$(RUN) python scripts/debian_packages.py --install

demo: setup  ## train the small GPT with WSD on the Wikipedia sample, then the WSD claim check (quick)
	$(RUN) paperzoo fit --config wsd/gpt_wikipedia --config cpu --trainer.default_root_dir runs/demo
	$(RUN) paperzoo check wsd --quick

test: setup lint test-fast  ## lint and the default test tier (what CI runs)

lint:
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy packages/core/src

test-fast:
	$(RUN) pytest -n 2

test-slow: setup  ## claim checks in quick mode, wheel builds
	$(RUN) pytest -n 2 -m slow

peers: setup  ## the peer libraries (peers group; granite-tsfm, pylate, FunASR's model code, fusion-bench and mergekit without their pins)
	$(UV) sync --all-packages --frozen --group peers
	$(UV) pip install --python .venv/bin/python --no-deps "granite-tsfm>=0.3" "pylate>=1.6"
	$(UV) pip install --python .venv/bin/python --no-deps "funasr==1.4.16" "rapidfuzz>=3.9" "six>=1.16" "kaldiio>=2.18" \
		"librosa>=0.10" "lazy-loader>=0.4" "torch-complex>=0.4"
	$(UV) pip install --python .venv/bin/python --no-deps "fusion-bench==0.2.33" "mergekit==0.1.5" \
		"omegaconf>=2.2,<2.4" "hydra-core>=1.3" "antlr4-python3-runtime==4.9.3" "accelerate>=1.6" "peft>=0.18" \
		"bidict>=0.23" "immutables>=0.21"

test-peers: peers  ## equality tests against peer libraries (transformers, granite-tsfm, sentence-transformers, pylate, muvera-python, mambapy, FunASR, fusion-bench, mergekit)
	$(UV) run --frozen --all-packages --group peers pytest -n 2 -m peers

testbed: setup  ## the merging testbed: Fashion-MNIST base + vision experts, GPT base + text experts (cached by recipe)
	$(RUN) python -m paperzoo.efficiency.merging.testbed

check: setup  ## full-mode claim check of KEY (default wsd), written to benchmarks/results/KEY.json
	$(RUN) paperzoo check $(KEY)

check-all: setup
	for key in $$($(RUN) python -c "from paperzoo.core.card import discover_cards; print(*discover_cards())"); do \
		$(RUN) paperzoo check $$key || exit 1; done

report: setup  ## benchmarks/RESULTS.md and plots from the result files
	$(RUN) paperzoo report

bench: peers  ## performance benchmarks against peer libraries (installs the peers group)
	$(UV) run --frozen --all-packages --group peers python benchmarks/perf/gpt_train_throughput.py --rounds 5 --steps 40
	$(UV) run --frozen --all-packages --group peers python benchmarks/perf/tsmixer_vs_patchtsmixer.py --threads 1 \
		--batch-size 16 --steps 8 --warmup 2 --rounds 5
	$(UV) run --frozen --all-packages --group peers python benchmarks/perf/ttm_vs_granite.py --threads 1 \
		--rounds 5 --steps 8 --warmup 2
	$(UV) run --frozen --all-packages --group peers python benchmarks/perf/muvera_vs_muvera_python.py --threads 1 \
		--documents 500 --queries 500 --rounds 3 --search-queries 200
	$(UV) run --frozen --all-packages --group peers python benchmarks/perf/mamba_scan.py --threads 1
	$(UV) run --frozen --all-packages --group peers python benchmarks/perf/paraformer_vs_funasr.py --threads 1 --rounds 7
	$(UV) run --frozen --all-packages --group peers python benchmarks/perf/merge_vs_mergekit.py --shape full --experts 6 --rounds 3

build:  ## one wheel per member into dist/
	$(UV) build --all-packages --out-dir dist

clean:
	rm -rf dist runs lightning_logs .pytest_cache .mypy_cache .ruff_cache
