# The README's two commands: `make test` and `make demo`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: test demo lint typecheck check clean system-deps oidc-provider

# Debian packages the end-to-end tests start for real on 127.0.0.1 (wrk: the HTTP bench's smoke test).
SYSTEM_DEPS = redis-server chromium nginx wrk
# Node for the oidc-provider test: Debian's nodejs and npm, only when `node`
# (or `npm`) is not on PATH already (a node from nvm or nodesource is fine).
NODE_DEPS = nodejs npm
# panva's oidc-provider, pinned by the committed lock file, installed once into
# an ignored cache folder (never into the source tree).
OIDC_PROVIDER_SRC   = tests/e2e/oidc_provider
OIDC_PROVIDER_CACHE = .cache/oidc-provider

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## test: create .venv when missing, install jwtedge with its dev extra, run the tests
# pytest exits 5 when it collected nothing; that is not a failing test.
test: $(STAMP) system-deps oidc-provider
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
	command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || missing="$$missing $(NODE_DEPS)"; \
	if [ -n "$$missing" ]; then \
	    if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	        echo "installing:$$missing"; \
	        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	    else \
	        echo "missing Debian packages:$$missing (tests that need them will skip; under CI they fail)"; \
	    fi; \
	fi

## oidc-provider: `npm ci` the pinned oidc-provider into .cache/oidc-provider when its lock
## changed or it is missing; without npm (or offline) its test skips with the reason
## (and fails under CI=true).
oidc-provider: system-deps
	@if ! command -v npm >/dev/null 2>&1; then \
	    echo "npm is missing: the oidc-provider test will skip"; \
	elif cmp -s $(OIDC_PROVIDER_SRC)/package-lock.json $(OIDC_PROVIDER_CACHE)/package-lock.json \
	        && [ -f $(OIDC_PROVIDER_CACHE)/node_modules/oidc-provider/package.json ]; then \
	    :; \
	else \
	    echo "installing oidc-provider into $(OIDC_PROVIDER_CACHE)"; \
	    mkdir -p $(OIDC_PROVIDER_CACHE) \
	    && cp $(OIDC_PROVIDER_SRC)/package.json $(OIDC_PROVIDER_SRC)/package-lock.json $(OIDC_PROVIDER_CACHE)/ \
	    && npm ci --prefix $(OIDC_PROVIDER_CACHE) --no-audit --no-fund --loglevel=error \
	    || echo "npm ci failed: the oidc-provider test will retry, then skip"; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/hadolint Dockerfile

typecheck: $(STAMP)
	$(BIN)/mypy --strict verifier deploy

check: test lint typecheck

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .cache
