# The two commands for a new machine are `make demo` and `make test` (see README.md).
# Both run the idempotent set-up first (Debian packages, .venv, torch, plugin registration).

PY := .venv/bin/python
QGIS_PROCESS := scripts/qgis_process
DEMO_OUT ?= out/demo
PYTEST_ARGS ?=

.PHONY: setup demo test test-fast lint typecheck package qgis_process bench clean

setup:
	bash scripts/setup.sh

demo: setup
	bash scripts/demo.sh $(DEMO_OUT)

test: setup lint typecheck
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -m "not slow and not qgis" $(PYTEST_ARGS)

lint: setup
	$(PY) -m ruff check .

# the engine only (settings in pyproject.toml [tool.mypy])
typecheck: setup
	$(PY) -m mypy csakd_qgis

# Plugin ZIP for QGIS's "Install from ZIP": engine, algorithms, resources, licence.
package:
	bash scripts/package.sh

# make qgis_process ARGS="run csakd:fuse -- LR_HSI=... HR_MSI=... OUTPUT=out.tif"
qgis_process: setup
	$(QGIS_PROCESS) $(ARGS)

bench: setup
	$(PY) bench/run_all.py

clean:
	rm -rf .qgis build dist out .pytest_cache .ruff_cache .mypy_cache
