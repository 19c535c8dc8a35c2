# onionmail — the two commands a fresh machine needs:
#   make demo   installs what it needs, then runs the two-box demo on a private Tor network
#   make test   installs what it needs, then runs the whole test suite (real tor included)

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
APT_PACKAGES := tor torsocks neomutt dovecot-imapd postgresql onionbalance swaks strace knot unbound gnupg procps systemd certbot pebble
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test docs lint deps system-deps venv clean bench bench-full bench-deps postfix-deps \
        lock lock-upgrade outdated test-debian13

demo: deps
	$(BIN)/onionmail demo

test: deps docs
	$(BIN)/ruff check onionmail threat_model tui gateway tests bench docs
	$(BIN)/mypy
	CI=$${CI:-} $(BIN)/pytest

# The documentation site, into site/: broken links and missing pages fail the build.
docs: deps
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir site

# Benchmarks: never run by the tests (postfix-deps brings smtp-source and smtp-sink;
# sasl2-bin the sasldb of the Postfix submission reference, which relays after AUTH).
bench: deps bench-deps   # quick run, about 8 minutes
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

# Debian packages: tor (and tor-gencert) for the private network, neomutt and swaks as real
# clients, Knot and Unbound as a real DNSSEC setup, procps for the tests that read `ps`.
system-deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

# The environment is exactly the lock (requirements/lock.txt: every package, direct and
# transitive, pinned with its hashes, for every supported Python): rebuilt from scratch
# whenever the lock or pyproject.toml changes, so nothing stale or unpinned stays in it.
$(VENV)/.installed: requirements/lock.txt pyproject.toml
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --require-hashes --no-deps -r requirements/lock.txt
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $@

venv: $(VENV)/.installed

# Updating the lock (README "Dependencies"): `make lock` re-resolves after pyproject.toml
# changed, keeping every pin that still fits; `make lock-upgrade` takes the newest releases
# the ranges allow; `make outdated` lists what is newer than the lock. The resolver (uv)
# lives in a venv of its own, pinned by requirements/tools.txt.
TOOLS := .venv-tools/bin
LOCK_ARGS := pyproject.toml requirements/build.in --extra dev --universal \
             --custom-compile-command "make lock" \
             --python-version 3.11 --generate-hashes -o requirements/lock.txt

$(TOOLS)/uv: requirements/tools.txt
	rm -rf .venv-tools
	$(PYTHON) -m venv .venv-tools
	$(TOOLS)/pip install -q --require-hashes --no-deps -r requirements/tools.txt
	touch $@

lock: $(TOOLS)/uv
	$(TOOLS)/uv pip compile -q $(LOCK_ARGS)

lock-upgrade: $(TOOLS)/uv
	$(TOOLS)/uv pip compile -q --upgrade $(LOCK_ARGS)
	$(TOOLS)/uv pip compile -q --upgrade requirements/tools.in --universal \
	  --python-version 3.11 --generate-hashes -o requirements/tools.txt \
	  --custom-compile-command "make lock-upgrade"

outdated: venv
	$(BIN)/pip list --outdated --exclude-editable

# The whole suite on Debian 13 (trixie, its python3 and its tor, Postfix, ...) in a root made
# with debootstrap (kept in DEBIAN13_ROOT between runs). Not part of CI: about 15 minutes.
DEBIAN13_ROOT ?= /var/tmp/onionmail-debian13/root
test-debian13:
	DEBIAN13_ROOT=$(DEBIAN13_ROOT) bash tests/debian13/run

clean:
	rm -rf $(VENV) .venv-tools .mypy_cache .ruff_cache .pytest_cache build *.egg-info
