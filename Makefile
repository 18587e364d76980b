# Every target builds or refreshes .venv from pyproject.toml with the tested pins in
# constraints.txt, so a fresh machine needs nothing installed by hand.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install test lint demo bench bench-quick schemas clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev,bench,serve,onnx,ann,tune]"
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check unirec tests bench
	$(BIN)/python -m pytest -q tests

lint: $(STAMP)
	$(BIN)/ruff check unirec tests bench

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

bench: $(STAMP)
	$(BIN)/python -m bench.run

bench-quick: $(STAMP)
	$(BIN)/python -m bench.run --quick

clean:
	rm -rf $(VENV) unirec-store demo .pytest_cache
