# chromaflow: the two commands a fresh machine needs.
#   make demo   set up, build a small OpenMoji chapter, colorize it, print report.html's path
#   make test   set up and run the test suite (what CI runs)
#   make mutate mutation testing of the modules that decide correctness (slow; docs/testing.md)

PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= demo
STAMP := $(VENV)/.installed

.PHONY: venv demo test bench mutate clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (chromaflow needs Python 3.11)"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned: these wheels lie on the build machines' disk; an unpinned torch
	# would pull a multi-GB build from the registry.
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e '.[cpu,test,demo]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/chromaflow demo --out $(DEMO_DIR)

test: $(STAMP)
	HF_HUB_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0 $(PY) -m pytest tests -q

# MUTATE_GROUPS: groups of tests/mutation/groups.toml (default all); MUTATE_ARGS e.g. --resume
mutate: $(STAMP)
	$(PY) -m pip install --quiet -e '.[mutate]'
	HF_HUB_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0 $(PY) tests/mutation/mutate.py $(MUTATE_ARGS) $(MUTATE_GROUPS)

bench: $(STAMP)
	$(PY) bench/bench_pipeline.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
