# `make demo`: set up .venv and run the main job on the bundled data; `make test`: the test suite.
# Both bootstrap the virtual environment on first use.
PYTHON ?= python3
VENV   ?= .venv
# The builds this machine keeps on disk; override for another platform, e.g.
#   make setup TORCH="torch==2.9.1 torchvision==0.24.1"   (aarch64)
TORCH  ?= torch==2.14.1 torchvision==0.29.1
BIN     = $(VENV)/bin

.PHONY: setup demo test lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@# torch==2.14.1 is a CUDA build (5.8 GiB installed): say so before pip fails half-way with ENOSPC
	@$(PYTHON) -c "import pathlib, shutil, sys; venv = pathlib.Path('$(VENV)').absolute(); \
	  free = shutil.disk_usage(next(p for p in venv.parents if p.exists())).free / 2**30; \
	  sys.exit(f'make setup: {free:.1f} GiB free here and the venv needs about 6.5 GiB (torch is a CUDA build): '\
	           'free some space, or put the venv on a bigger disk: make VENV=/big/disk/venv ...') if free < 6.5 else None"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[dev,coco,export,serve,milvus]'
	touch $@

demo: setup
	$(BIN)/alexsuite demo --out runs/demo

test: setup lint
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: setup
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/python benchmarks/relu_vs_tanh.py
	$(BIN)/python benchmarks/train_fashion_mnist.py
	$(BIN)/python benchmarks/train_fashion_mnist.py --amp --epochs 26 --seed 0 --out runs/bench/fm-amp-s0 \
	    --json benchmarks/results/train_fashion_mnist_amp_seed0.json
	$(BIN)/python benchmarks/train_fashion_mnist.py --amp --epochs 26 --seed 1 --out runs/bench/fm-amp-s1 \
	    --json benchmarks/results/train_fashion_mnist_amp_seed1.json
	$(BIN)/python benchmarks/index_build.py
	$(BIN)/python benchmarks/retrieval_quality.py
	$(BIN)/python benchmarks/search_cold_start.py
	$(BIN)/python benchmarks/search_speed.py
	$(BIN)/python benchmarks/proposals_recall.py
	$(BIN)/python benchmarks/scenes_articles.py
	$(BIN)/python benchmarks/train_fashion_mnist.py --paste-on alexsuite/data/bundled/photos \
	    --leave-out benchmarks/results/scenes_dev_val_articles.json --out runs/bench/fashion-mnist-paste-leaveout \
	    --json benchmarks/results/train_fashion_mnist_paste_leaveout.json
	$(BIN)/python benchmarks/backbone_transfer.py
	$(BIN)/python benchmarks/detection.py --train
	$(BIN)/python benchmarks/demo.py
	$(BIN)/python benchmarks/decode_memory.py
	$(BIN)/python benchmarks/api_batching.py
	$(BIN)/python benchmarks/serve_load.py

clean:
	rm -rf $(VENV) runs .pytest_cache
