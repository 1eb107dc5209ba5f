# Two commands do all set-up: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
FLASK  := $(BIN)/flask --app wsgi

.PHONY: run test lint format bench install install-dev migrate demo translations clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@ $(VENV)/.runtime

install: $(VENV)/.runtime
install-dev: $(VENV)/.dev

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

test: lint
	$(BIN)/python -m pytest

bench: install-dev
	@for script in bench/*.py; do [ -e "$$script" ] || continue; case $$script in */_*) continue;; esac; echo "== $$script"; $(BIN)/python $$script || exit 1; done

# Refresh the message catalogue after changing user-facing text.
translations: install
	$(BIN)/pybabel extract -F babel.cfg -k _l -k lazy_gettext --no-location -o portal/translations/messages.pot .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
