# Two commands do all set-up: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
FLASK  := $(BIN)/flask --app wsgi
# Two workers: the suite's own processes (live servers, Chromium) use the rest of a 2-core machine.
PYTEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -n $(PYTEST_WORKERS)

.PHONY: run test quick lint format bench install install-dev migrate demo translations clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@ $(VENV)/.runtime

# The compiled catalogues the app reads (not in git): rebuilt whenever a .po changes.
MO_FILES := $(patsubst %.po,%.mo,$(wildcard portal/translations/*/LC_MESSAGES/messages.po))

%.mo: %.po | $(VENV)/.runtime
	$(BIN)/pybabel compile --statistics -i $< -o $@

install: $(VENV)/.runtime $(MO_FILES)
install-dev: $(VENV)/.dev $(MO_FILES)

migrate: install
	$(FLASK) db upgrade

demo: migrate
	$(FLASK) portal demo

run: demo
	@echo ""
	@echo "  Partner portal on http://$${HOST:-127.0.0.1}:$${PORT:-5000}"
	@echo "  Demo logins (password: portal-demo):"
	@echo "    admin@example.com    (admin: settings, team)"
	@echo "    manager@example.com  (manager: applications, partners)"
	@echo "    partner@example.com  (partner, ref code 'demo')"
	@echo ""
	$(BIN)/python wsgi.py

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The whole suite, then the money, payout and rewards tests (the browser's payout walk too)
# again with the clock pinned where the UTC date is not the programs' date: 00:30 UTC (still
# yesterday in New York, the demo's zone), 23:30 UTC (already tomorrow in Berlin, the test
# programs' zone) and 23:30 on the last day of the month in Berlin. A test that reads the real
# clock for a date it compares fails here, not at night in CI. One session runs each test once
# per clock (start-up paid once, both workers busy to the end). Tests marked `own_clock` (the
# ledger's: the harness pins their clock for all they do) would repeat themselves exactly under
# a pinned clock, so only the first run has them; the Hypothesis counts are the same in both runs.
test: lint
	$(PYTEST) --durations=25
	$(PYTEST) -q -m money --clock=night,late,month-end

# The inner loop: everything but the browser walks.
quick: install-dev
	$(PYTEST) -q -m "not e2e"

bench: install-dev
	@for script in bench/*.py; do [ -e "$$script" ] || continue; case $$script in */_*) continue;; esac; echo "== $$script"; $(BIN)/python $$script || exit 1; done

# Refresh the message catalogues after changing user-facing text: new strings appear empty in
# each language's messages.po; translate them, then `make test` (tests/unit/test_catalogue.py).
translations: install
	$(BIN)/pybabel extract -F babel.cfg -k _l -k lazy_gettext --no-location --ignore-dirs=".* __pycache__" \
		-o portal/translations/messages.pot .
	$(BIN)/pybabel update --no-fuzzy-matching -i portal/translations/messages.pot -d portal/translations
	$(MAKE) install

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
