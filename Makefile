VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: test demo lint venv docs gpu-check gpu-wheels

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed

lint: venv
	$(VENV)/bin/ruff check .

test: venv lint
	$(PY) -m pytest -q --durations=15

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
