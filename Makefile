VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: test test-isa test-ci-slow demo lint venv docs gpu-check gpu-wheels

$(VENV)/.installed: requirements.txt requirements-dev.txt requirements-deploy.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt -r requirements-dev.txt -r requirements-deploy.txt
	touch $@

venv: $(VENV)/.installed

lint: venv
	$(VENV)/bin/ruff check .

test: venv lint
	$(PY) -m pytest -q --durations=15

# The numerics-sensitive tests (training steps and forms, DCR, ops and models, backends, precision, the golden
# comparisons) again with PyTorch's oneDNN held to AVX2 and to SSE4.1 (tests/conftest.py): each sums in another
# order, as another CPU does, so a float bound observed on one CPU fails here (tests/bounds.py derives them).
NUMERICS := tests/test_train.py tests/test_train_form.py tests/test_dcr.py tests/test_pdc.py tests/test_stdc.py \
	tests/test_sdnet.py tests/test_stdnet.py tests/test_convert.py tests/test_checkpoint.py tests/test_backends.py \
	tests/test_onnx.py tests/test_losses.py tests/test_distributed.py tests/test_training_settings.py tests/test_generate.py tests/test_data_transforms.py
ISAS := AVX2 SSE41

test-isa: venv
	$(foreach isa,$(ISAS),ONEDNN_MAX_CPU_ISA=$(isa) $(PY) -m pytest -q $(NUMERICS) &&) true

# The slow tests .ci/run runs after the suite: the server's stall tests (64 stalled uploads and 200 silent
# connections; every deadline of a connection) and its memory under sixteen 62-megapixel uploads, the ExecuTorch
# programs (export_onnx.py --format executorch, predict.py, SDNet-A and STDNet through the executorch backend) and
# the INT8 networks passing their accuracy gate (OpenVINO through NNCF, ExecuTorch through PT2E) and a .pte checked
# by export_onnx.py --verify.
test-ci-slow: venv
	$(PY) -m pytest -q -m slow tests/test_serve.py tests/test_executorch.py tests/test_int8.py \
		tests/test_shipped.py

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
