# The README's two commands: `make test` and `make demo`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: test demo lint typecheck check clean system-deps

# Debian packages the end-to-end tests start for real on 127.0.0.1 (wrk: the HTTP bench's smoke test).
SYSTEM_DEPS = redis-server chromium nginx wrk

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## test: create .venv when missing, install jwtedge with its dev extra, run the tests
# pytest exits 5 when it collected nothing; that is not a failing test.
test: $(STAMP) system-deps
	$(BIN)/python -m pytest -q $(PYTEST_ARGS); rc=$$?; [ $$rc -eq 5 ] && rc=0; exit $$rc

## demo: create .venv when missing, install jwtedge, run the demo (a dev issuer and the app
## on 127.0.0.1; it prints the sign-in link; Ctrl-C stops both)
demo: $(STAMP)
	$(BIN)/jwtedge demo

## system-deps: install missing Debian packages when we can (root and apt-get);
## otherwise the tests that need them skip with the reason (and fail under CI=true, 1 or yes).
system-deps:
	@missing=""; for pkg in $(SYSTEM_DEPS); do \
	    dpkg-query -W -f='$${Status}' $$pkg 2>/dev/null | grep -q "ok installed" || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	    if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	        echo "installing:$$missing"; \
	        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	    else \
	        echo "missing Debian packages:$$missing (tests that need them will skip; under CI they fail)"; \
	    fi; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/hadolint Dockerfile

typecheck: $(STAMP)
	$(BIN)/mypy --strict verifier deploy

check: test lint typecheck

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
