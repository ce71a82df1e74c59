# Dynamic Margin: every target installs what it needs on first use.
#   make demo   - start a devnet, deploy, run the keeper and liquidation bot through a crash
#                 (a real window: make demo ARGS="--prices FILE.csv --from 2020-03-11 --to 2020-03-14")
#   make test   - lint and the whole test suite (unit on ape's local chain, integration on anvil)
#   make bench  - gas, risk-model and keeper benchmarks; writes bench/results.json
#   make fuzz   - deeper property and stateful fuzzing (more examples, more steps)
#   make backtest - the shipped margin configuration's backtest on BTC, ETH and SOL (2018-2023):
#                   both periods, tables, JSON and PNG charts in out/
#   make calibrate - re-run the written selection rule on 2018-2021 (writes out/; CALIBRATE_WRITE=1
#                   also rewrites deploy/risk.yaml)
#   make funding-study - reference-mode funding backtest, max_funding_rate and funding reserve
#   make backtest-portfolio - portfolio margin vs the tiered sum on BTC/ETH(/SOL), both periods
#   make devnet - a local devnet (anvil, 1 s blocks) with both bots running through a crash;
#                 stays up until Ctrl-C (make devnet ARGS=--once stops once both bots acted)
#   make dashboard-screenshot - docs/dashboard.png: the live risk page (dmm dashboard) after a
#                 devnet crash, taken in headless chromium
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(CURDIR)/node_modules/.bin:$(BIN):$(PATH)
# ape keeps its data (compiler caches, accounts) inside the repo, never in the home folder.
export APE_DATA_FOLDER ?= $(CURDIR)/.build/ape-data
export MPLBACKEND := Agg

# Unit tests on ape's in-process chain; property and stateful fuzzing on titanoboa (fast EVM);
# integration tests on an anvil devnet that ape-foundry starts and stops.
UNIT_DIRS := $(wildcard tests/registry tests/scenarios tests/profiles tests/engine tests/risk tests/protocol tests/bots tests/devnet tests/cli tests/test_*.py)
PYTEST_UNIT := $(BIN)/ape test $(UNIT_DIRS)
PYTEST_FUZZ := $(BIN)/pytest -p no:ape_test tests/fuzz
PYTEST_ANVIL := $(BIN)/ape test tests/integration --network ethereum:local:foundry

.PHONY: install compile system-deps demo devnet dashboard-screenshot test unit fuzz-quick integration lint bench fuzz backtest calibrate backtest-portfolio funding-study clean

$(VENV)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

node_modules/.installed: package.json package-lock.json
	npm install --no-audit --no-fund --loglevel=error
	touch $@

install: $(VENV)/.installed node_modules/.installed

# Debian packages the integration tests drive: redis-server (keepers co-signing over Redis) and
# chromium (the dashboard's browser test). Installed when missing, as root (as CI runs).
SYSTEM_COMMANDS := redis-server chromium
system-deps:
	@missing=""; for c in $(SYSTEM_COMMANDS); do command -v $$c >/dev/null || missing="$$missing $$c"; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" != 0 ]; then echo "missing Debian packages:$$missing (apt-get install them as root)"; exit 1; fi; \
		echo "installing Debian packages:$$missing"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi

PY_DIRS := $(wildcard offchain tests scripts bench)

lint: install
	$(BIN)/ruff check $(PY_DIRS)
	$(BIN)/ruff format --check $(PY_DIRS)

unit: install
	$(PYTEST_UNIT) -q

fuzz-quick: install
	@if ls tests/fuzz/test_*.py >/dev/null 2>&1; then $(PYTEST_FUZZ) -q; fi

integration: install system-deps
	@if ls tests/integration/test_*.py >/dev/null 2>&1; then $(PYTEST_ANVIL) -q; fi

# The three layers run side by side once the contracts are compiled (ape would otherwise compile
# from two processes at once): the unit and fuzz layers are CPU-bound, the integration layer
# mostly waits on anvil and its subprocesses, so on 2 cores this takes about two-thirds as long.
compile: install
	$(BIN)/ape compile

test: lint compile
	$(MAKE) --no-print-directory -j3 --output-sync=target unit fuzz-quick integration

fuzz: install
	HYPOTHESIS_PROFILE=deep $(PYTEST_FUZZ) -q
	HYPOTHESIS_PROFILE=deep $(PYTEST_UNIT) -q

bench: install
	$(BIN)/python -m bench

# The walk-forward backtest on the shared Binance hourly files (read in place, never copied):
# the frozen shipped configuration on the calibration period (to 2021-12-31) and the report
# period (2022-2023), with the DVOL candidate where an index exists.
SHARED_DATA ?= $(CURDIR)/../shared/data
PRICES_btc := binance_btcusdt_1h_2018_2023.csv
PRICES_eth := binance_ethusdt_1h_2018_2023.csv
PRICES_sol := binance_solusdt_1h_2020_2023.csv
VOL_btc := --vol-index $(SHARED_DATA)/deribit_btc_dvol_1h_2021_2023.csv
VOL_eth := --vol-index $(SHARED_DATA)/deribit_eth_dvol_1d_2021_2023.csv
VOL_sol :=
backtest: install
	mkdir -p out
	for asset in btc eth sol; do \
		case $$asset in btc) f=$(PRICES_btc); v="$(VOL_btc)";; eth) f=$(PRICES_eth); v="$(VOL_eth)";; \
			sol) f=$(PRICES_sol); v="$(VOL_sol)";; esac; \
		$(BIN)/dmm backtest --prices $(SHARED_DATA)/$$f $$v --to 2021-12-31 --no-candidates \
			--json out/backtest_$${asset}_calibration.json > out/backtest_$${asset}_calibration.txt \
			|| exit 1; \
		$(BIN)/dmm backtest --prices $(SHARED_DATA)/$$f $$v --from 2022-01-01 --to 2023-12-31 \
			--json out/backtest_$${asset}.json > out/backtest_$${asset}.txt || exit 1; \
		cat out/backtest_$${asset}.txt; \
	done

CALIBRATE_WRITE ?=
calibrate: install
	mkdir -p out
	$(BIN)/dmm calibrate --out out \
		--prices $(SHARED_DATA)/$(PRICES_btc) --prices $(SHARED_DATA)/$(PRICES_eth) \
		--prices $(SHARED_DATA)/$(PRICES_sol) \
		--vol-index BTC=$(SHARED_DATA)/deribit_btc_dvol_1h_2021_2023.csv \
		--vol-index ETH=$(SHARED_DATA)/deribit_eth_dvol_1d_2021_2023.csv \
		$(if $(CALIBRATE_WRITE),--write-config deploy/risk.yaml)

# Funding on the shared Binance settlements and candles (BTC, ETH, SOL): the reference mode
# against the settled history, the registry's max_funding_rate and the funding reserve, sized on
# 2019-2021 and reported on 2022-2023 at the model's 1-hour horizon (8 hours for comparison).
funding-study: install
	mkdir -p out
	$(BIN)/python scripts/funding_study.py --data $(SHARED_DATA) --horizon 1 --horizon 8 --out out

# The portfolio margin on the 2018-2023 files: the calibration rule rechecked on data up to
# 2021 (BTC/ETH from 2018, then BTC/ETH/SOL from SOL's listing), then both groups walked forward
# with the frozen parameters (tables, out/backtest_portfolio_*.json and .png). About 15 minutes.
PORTFOLIO_FILES := $(foreach a,btc eth,--prices $(SHARED_DATA)/binance_$(a)usdt_1h_2018_2023.csv)
backtest-portfolio: install
	mkdir -p out
	$(BIN)/dmm backtest-portfolio --calibrate $(PORTFOLIO_FILES) \
		--prices $(SHARED_DATA)/binance_solusdt_1h_2020_2023.csv \
		--json out/backtest_portfolio_btc_eth_sol.json
	$(BIN)/dmm backtest-portfolio $(PORTFOLIO_FILES) --json out/backtest_portfolio_btc_eth.json

# Extra options go through ARGS (see `ape run demo --help`).
ARGS ?=
demo: install
	$(BIN)/ape run demo --network ethereum:local:foundry $(ARGS)

# The operator's devnet: deploy/devnet.yaml deployed on anvil, bots' config in out/devnet/.
devnet: install
	$(BIN)/dmm devnet --crash $(ARGS)

# The README's picture of the risk page: a devnet crash, then the page in headless chromium.
dashboard-screenshot: install system-deps
	$(BIN)/python scripts/dashboard_screenshot.py --out docs/dashboard.png

clean:
	rm -rf .build .hypothesis .pytest_cache bench/results.json out
