# `make demo` and `make test` create .venv and install what they need (the CPU build of torch first, so that
# pip does not pull the CUDA packages), at the exact versions the suite is tested with (constraints/tested.txt), then
# run. `make test-matrix` checks the newest releases setup.cfg allows and the minimum ones (.ci/matrix.py).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
CONSTRAINTS := constraints/tested.txt

.PHONY: demo test test-matrix lint bench install lock clean

$(VENV)/.installed: setup.cfg pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e ".[dev,plots,studio]"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(PY) scripts/demo.py

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(PY) -m pytest -q

test-matrix: $(VENV)/.installed
	$(PY) .ci/matrix.py

# Move the lock to the newest releases setup.cfg allows (a scratch venv, then its pip freeze); run `make test` after.
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install --quiet "$(TORCH_SPEC)"
	.venv-lock/bin/pip install --quiet -e ".[dev,plots,studio]"
	{ sed -n '/^#/p' $(CONSTRAINTS); .venv-lock/bin/pip freeze --all --exclude-editable | grep -v -e '^pip==' \
		-e '^-e' -e '^hf.tinyllm' | sed 's/+cpu$$//'; } > $(CONSTRAINTS).new && mv $(CONSTRAINTS).new $(CONSTRAINTS)
	rm -rf .venv-lock

bench: $(VENV)/.installed
	$(PY) benchmarks/bench_model.py --preset nano --batch_size 16 --seq_len 128
	$(PY) benchmarks/bench_model.py --preset micro

clean:
	rm -rf $(VENV) .venv-matrix outputs .pytest_cache
