# Two commands on a fresh machine: `make bench` (the main job) and `make test`.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
# Dataset root: $DIGITREC_DATA, else the shared copy beside this checkout.
DATA   ?= $(or $(DIGITREC_DATA),$(abspath ../shared/datasets/haverland))
# A real board's serial port (e.g. PORT=/dev/ttyUSB0); empty means the virtual device.
PORT   ?=
# The model the device bench runs: the 10-class GRAY model within 64 KB with the digit-sum
# head, level with v4 on the test split (README, "Which model to flash").
MODEL  ?= 10cls_GRAY/dr
BAUD   ?= 921600
# Raw-mode images (the device preprocesses; slower at the line rate): 0 = the whole split.
RAW_LIMIT ?= 800
REPORT ?= reports
DEVICE := $(or $(PORT),virtual)

export DIGITREC_DATA := $(DATA)
export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: install test lint bench readme clean

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
	$(PY) -m pytest -q --durations=15 tests

bench: install
	@test -d "$(DATA)" || { echo "no dataset at $(DATA): pass DATA=DIR, or run '$(VENV)/bin/digitrec data fetch' and pass the folder it prints"; exit 2; }
	@echo "== 1/4 data: $(DATA)"
	$(VENV)/bin/digitrec data stats --data "$(DATA)" --json $(REPORT)/data/stats.json --time-loads --quiet
	@echo "== 2/4 PC benchmark of exported_models/ on the test split"
	$(VENV)/bin/digitrec bench --data "$(DATA)" --report $(REPORT)/bench
	@echo "== 3/4 device benchmark of $(MODEL) on $(DEVICE) at $(BAUD) baud (tensor, then raw mode)"
	$(VENV)/bin/digitrec device bench --port $(DEVICE) --model $(MODEL) --data "$(DATA)" --baud $(BAUD) \
	  --mode tensor --out $(REPORT)/device/tensor.jsonl --json $(REPORT)/device/tensor.json --quiet
	$(VENV)/bin/digitrec device bench --port $(DEVICE) --model $(MODEL) --data "$(DATA)" --baud $(BAUD) \
	  --mode raw --limit $(RAW_LIMIT) --out $(REPORT)/device/raw.jsonl --json $(REPORT)/device/raw.json --quiet
	@echo "== 4/4 host vs device comparison"
	$(VENV)/bin/digitrec compare $(REPORT)/device/tensor.jsonl $(REPORT)/device/raw.jsonl \
	  --bench $(REPORT)/bench/bench.json --report $(REPORT)/compare
	@echo "reports in $(REPORT)/; 'make readme' copies the tables into README.md"

# Regenerate README.md's tables and plot from the reports written by `make bench`.
readme: install
	$(PY) tools/readme_tables.py --json $(REPORT)/bench/bench.json
	$(PY) tools/readme_tables.py --json $(REPORT)/bench/bench.json --readme docs/training.md

clean:
	rm -rf $(VENV) build .pytest_cache
