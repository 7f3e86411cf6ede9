# Two commands on a fresh machine:
#   make test   -- bootstraps .venv, builds the extension, runs the test suite
#   make demo   -- bootstraps .venv, builds the extension, then the paper in one command on the fixture
#                  corpus: analyze (with maps) -> segment -> rank -> report; prints the report's path
# The venv sees system site-packages so an installed torch (e.g. a CUDA build) is reused;
# if none imports, torch==2.13.0 is installed (the CPU wheel on our dev machines).
PYTHON ?= python3
VENV   ?= .venv
VPY    := $(VENV)/bin/python
TORCH_PIN ?= torch==2.13.0
STAMP  := $(VENV)/.satkern-built
SOURCES := setup.py pyproject.toml requirements-dev.txt $(shell find csrc -type f 2>/dev/null)
PYTEST_ARGS ?=

.PHONY: test demo env build bench clean

env: $(STAMP)

$(VPY):
	$(PYTHON) -m venv --system-site-packages $(VENV)

$(STAMP): $(VPY) $(SOURCES)
	@$(VPY) -c "import torch" 2>/dev/null && echo "satkern: reusing torch $$($(VPY) -c 'import torch; print(torch.__version__)')" \
	  || $(VPY) -m pip install $(TORCH_PIN)
	$(VPY) -m pip install -q -r requirements-dev.txt
	$(VPY) -m pip install -q --no-build-isolation --no-deps -e .
	@touch $(STAMP)

build: $(STAMP)

test: $(STAMP)
	$(VPY) -m pytest -q $(PYTEST_ARGS) tests

DEMO_ARGS ?=

demo: $(STAMP)
	$(VPY) -m satkern demo --out demo_out $(DEMO_ARGS)

bench: $(STAMP)
	$(VPY) -m pytest -q benchmarks

clean:
	rm -rf build $(VENV) satkern/*.so *.egg-info
