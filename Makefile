# onionmail — the two commands a fresh machine needs:
#   make demo   installs what it needs, then runs the two-box demo on a private Tor network
#   make test   installs what it needs, then runs the whole test suite (real tor included)

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
APT_PACKAGES := tor torsocks neomutt swaks strace knot unbound gnupg
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test lint deps system-deps venv clean bench bench-full bench-deps postfix-deps

demo: deps
	$(BIN)/onionmail demo

test: deps
	$(BIN)/ruff check onionmail threat_model tui gateway tests bench
	$(BIN)/mypy
	CI=$${CI:-} $(BIN)/pytest

# Benchmarks: never run by the tests (postfix-deps brings smtp-source and smtp-sink;
# sasl2-bin the sasldb of the Postfix submission reference, which relays after AUTH).
bench: deps bench-deps   # quick run, about 5 minutes
	$(BIN)/python -m bench --quick
bench-full: deps bench-deps
	$(BIN)/python -m bench

bench-deps:
	@dpkg-query -W -f='$${Status}' sasl2-bin 2>/dev/null | grep -q "install ok installed" || { \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends sasl2-bin libsasl2-modules; }

# Postfix: a real MTA as a plain onion peer in the tests and the reference in the
# benchmarks. Installed "No configuration": the system Postfix is never set up or
# started; tests and benchmarks run private instances on 127.0.0.1.
postfix-deps:
	@dpkg-query -W -f='$${Status}' postfix 2>/dev/null | grep -q "install ok installed" || { \
	  echo "postfix postfix/main_mailer_type select No configuration" | $(SUDO) debconf-set-selections && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postfix; }

lint: venv
	$(BIN)/ruff check onionmail threat_model tui gateway tests bench
	$(BIN)/ruff format --check onionmail threat_model tui gateway tests bench
	$(BIN)/mypy

deps: system-deps postfix-deps venv

# Debian packages: tor (and tor-gencert) for the private network, neomutt and swaks as real clients.
system-deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build *.egg-info
