# Two commands on a fresh machine: `make bench` (the main job) and `make test`.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
# Dataset root: $DIGITREC_DATA, else the shared copy beside this checkout.
DATA   ?= $(or $(DIGITREC_DATA),$(abspath ../shared/datasets/haverland))
# A real board's serial port (e.g. PORT=/dev/ttyUSB0); empty means the virtual device.
PORT   ?=
REPORT ?= reports

export DIGITREC_DATA := $(DATA)
export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: install test lint bench clean

install: $(STAMP)

$(STAMP): requirements.txt host/pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e host
	touch $@

lint: install
	$(VENV)/bin/ruff check host tests tools

test: lint
	$(PY) -m pytest -q tests

bench: install
	@echo "== data: $(DATA)"
	$(VENV)/bin/digitrec data stats --data "$(DATA)" --json $(REPORT)/data/stats.json --quiet

clean:
	rm -rf $(VENV) build .pytest_cache
