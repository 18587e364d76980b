# Every target builds or refreshes .venv from pyproject.toml with the tested pins in
# constraints.txt, so a fresh machine needs nothing installed by hand.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install test lint demo bench bench-quick schemas clean venvs docs browser

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[all,dev,bench,docs,browser]"
	touch $(STAMP)

test: $(STAMP) venvs
	$(BIN)/ruff check unirec tests bench
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -n auto --maxprocesses 4 --dist loadfile tests

lint: $(STAMP)
	$(BIN)/ruff check unirec tests bench
	$(BIN)/lint-imports

schemas: $(STAMP)
	$(BIN)/python -c "import json; from unirec.config import json_schema; \
		print(json.dumps(json_schema(), indent=2, sort_keys=True))" > schemas/config.schema.json

# The whole pipeline on a small synthetic dataset with images and a known answer:
# generate, featurize, fit, evaluate on the held-out test split, recommend, inspect with SQL.
demo: $(STAMP)
	$(BIN)/unirec datasets synthetic --users 500 --items 200 --interactions 20000 --images \
		--out demo/data
	$(BIN)/unirec featurize demo/data/data.json --store demo/store
	$(BIN)/unirec fit --store demo/store --epochs 10
	$(BIN)/unirec evaluate --store demo/store -k 10
	$(BIN)/unirec recommend --user 1 -k 10 --store demo/store
	$(BIN)/unirec similar --item 1 -k 5 --store demo/store
	$(BIN)/unirec sql "SELECT categorical.category AS category, count(*) AS interactions \
		FROM interactions JOIN items USING (item_id) GROUP BY ALL ORDER BY 2 DESC LIMIT 5" \
		--store demo/store
	@echo "The store is demo/store: try .venv/bin/unirec recommend --user 2 --store demo/store"
	@echo "or .venv/bin/unirec sql 'SELECT * FROM users LIMIT 5' --store demo/store"
	@echo "Explore it in a browser: run .venv/bin/unirec serve --store demo/store, then open http://127.0.0.1:8000/"

# Debian's chromium for the explorer's browser test (tests/serve/test_browser.py, driven by
# Playwright from the browser extra; it skips with a message without chromium). Playwright
# never downloads a browser here: the test points it at /usr/bin/chromium. Needs root + apt.
browser:
	DEBIAN_FRONTEND=noninteractive apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

bench: $(STAMP)
	$(BIN)/python -m bench.run

bench-quick: $(STAMP)
	$(BIN)/python -m bench.run --quick

# The API reference site (mkdocs + mkdocstrings, the docs extra) into site/: warnings are
# errors, and nothing is fetched from the network.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

clean:
	rm -rf $(VENV) $(VENVS) unirec-store demo .pytest_cache site

# Side venvs for tests/test_install.py, cached in .venvs/ (rebuilt only when the declared
# dependencies change): serve = the wheel with only [serve] at the lowest versions the
# ranges allow (constraints-lowest.txt), no torch; duckdb-$(OLDEST_DUCKDB) = that DuckDB alone,
# the oldest client that must open a store. The tests reinstall the current wheel (no deps).
VENVS := .venvs
OLDEST_DUCKDB := 1.0.0
venvs: $(VENVS)/serve/.installed $(VENVS)/duckdb-$(OLDEST_DUCKDB)/.installed

$(VENVS)/serve/.installed: pyproject.toml constraints-lowest.txt | $(STAMP)
	rm -rf $(VENVS)/serve $(VENVS)/wheel
	$(BIN)/python -m pip wheel -q --no-deps -w $(VENVS)/wheel .
	$(PYTHON) -m venv $(VENVS)/serve
	$(VENVS)/serve/bin/python -m pip install -q -c constraints-lowest.txt \
		"$$(ls $(VENVS)/wheel/unirec-*.whl)[serve]"
	touch $@

$(VENVS)/duckdb-$(OLDEST_DUCKDB)/.installed:
	rm -rf $(VENVS)/duckdb-$(OLDEST_DUCKDB)
	$(PYTHON) -m venv $(VENVS)/duckdb-$(OLDEST_DUCKDB)
	$(VENVS)/duckdb-$(OLDEST_DUCKDB)/bin/python -m pip install -q duckdb==$(OLDEST_DUCKDB)
	touch $@
