VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: test test-isa test-ci-slow demo lint venv docs gpu-check gpu-wheels

$(VENV)/.installed: requirements.txt requirements-dev.txt requirements-deploy.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt -r requirements-dev.txt -r requirements-deploy.txt
	touch $@

# The runtime of the page's device mode (onnxruntime-web, pinned with its lock file), served from our own origin;
# without npm the page runs its server mode only (its device-mode tests skip, saying so).
node_modules/.installed: package.json package-lock.json
	if command -v npm >/dev/null; then npm ci --no-audit --no-fund --ignore-scripts --loglevel=error && touch $@; \
	else echo "npm not found: the page's device mode needs node_modules (npm ci)" >&2; fi

venv: $(VENV)/.installed node_modules/.installed

lint: venv
	$(VENV)/bin/ruff check .

# Two test processes (pytest-xdist), each of one thread (tests/conftest.py): on 2 cores one computes while the other
# waits on a subprocess it started. A test file stays in one process, so its module fixtures are built once.
TEST_PROCESSES ?= 2
PYTEST := $(PY) -m pytest -q -n $(TEST_PROCESSES) --dist loadfile

test: venv lint
	$(PYTEST) --durations=15

# The numerics-sensitive tests (training steps and forms, DCR, ops and models, backends, precision, the golden
# comparisons) again with PyTorch's oneDNN held to AVX2 and to SSE4.1 (tests/conftest.py): each sums in another
# order, as another CPU does, so a float bound observed on one CPU fails here (tests/bounds.py derives them).
NUMERICS := tests/test_train.py tests/test_train_form.py tests/test_dcr.py tests/test_pdc.py tests/test_stdc.py \
	tests/test_sdnet.py tests/test_stdnet.py tests/test_convert.py tests/test_checkpoint.py tests/test_backends.py \
	tests/test_onnx.py tests/test_losses.py tests/test_distributed.py tests/test_training_settings.py tests/test_generate.py tests/test_data_transforms.py
ISAS := AVX2 SSE41

test-isa: venv
	$(foreach isa,$(ISAS),ONEDNN_MAX_CPU_ISA=$(isa) $(PYTEST) $(NUMERICS) &&) true

# The slow tests, which .ci/run runs after the suite (pyproject.toml's markers say which they are); every write point of
# tests/test_faults.py (`pytest -m exhaustive`, about 7 minutes on 2 cores) is left to those who change a writer.
test-ci-slow: venv
	$(PYTEST) -m slow

demo: venv
	$(PY) demo.py

# The GPU machine lent to a session has no network: the check runs with the Python that holds torch there
# (docs/gpu_check.md), and with the project's venv where one exists.
gpu-check:
	$(if $(wildcard $(PY)),$(PY),python3) bench/gpu_check.py

# The pure-Python packages the GPU machine lacks, carried to it as wheels (docs/gpu_check.md).
gpu-wheels:
	python3 -m pip download -q --no-deps --only-binary=:all: -d .whl pysodmetrics==1.6.2

# The pages of docs/ written from the code (tests/test_docs.py checks they are current).
docs: venv
	$(PY) docs/make_pages.py
