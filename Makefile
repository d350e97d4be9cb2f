# The two commands a newcomer needs: `make demo` and `make test`. `make check` runs before every commit.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# Python caches bytecode and pytest its rewritten test modules even where the shell says not to (this
# machine sets PYTHONDONTWRITEBYTECODE=1): without them every xdist worker compiles the tree again, 5 s each.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: demo test check lab-test lab-test-two-lbs lint types unit bench chaos load-tool check-tools lab-tools down clean venv rehearsal rehearsal-down rehearsal-test

venv: $(STAMP)

# The virtualenv is rebuilt when pyproject.toml changes. On a fresh Debian machine without the venv
# module, install it first (as root) rather than fail with Python's terse message.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then apt-get update -q && apt-get install -y -q python3-venv; \
	  else echo "error: $(PYTHON) has no venv module: install python3-venv" >&2; exit 1; fi; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,services]'
	touch $(STAMP)

## demo: build the lab, bootstrap the swarm, deploy the stack; ends with the URL and a timing table
demo: venv
	$(BIN)/fab demo

## check: lint (with the import contracts), types, unit and Pulumi mock tests (under a minute)
# Four workers even on two cores: a fifth of the unit tests' time is spent waiting out timeouts.
check: lint types unit

# lint-imports: the walls between the layers (the contracts in pyproject.toml).
lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	PYTHONPATH=services $(BIN)/lint-imports

types: venv
	$(BIN)/mypy

unit: venv check-tools
	$(BIN)/pytest -q -n 4 -m "not lab" tests/unit tests/infra

## test: everything in check, then the lab tests on a real cluster (its own lab, torn down after)
test: check lab-test

# The two-lb lab tests (tests/lab/test_two_lbs.py) make a second lab of their own (lb_count 2) beside the first.
lab-test: venv lab-tools
	$(BIN)/pytest -m lab tests/lab -v --durations=40

## lab-test-two-lbs: the two-lb lab tests alone (VIP, its moves, the forwarder, SSH through lb-2), on a lab of their own
lab-test-two-lbs: venv
	$(BIN)/pytest -m "lab and two_lbs" tests/lab/test_two_lbs.py -v --durations=20

## bench: timings, big labs and throughput on a lab of its own, to docs/bench/ (JSON and plots) and docs/numbers.md
bench: venv load-tool
	$(BIN)/python -m bench

## chaos: day-2 operations and failures under load, each on a lab of its own (docs/bench/chaos*.json, docs/numbers.md).
chaos: venv load-tool
	$(BIN)/python -m bench.chaos

# The Debian tools the tests run, installed (as root) when missing, as `make demo` installs the engine:
# no test is skipped for want of one. check: `cloud-init schema` for the user data, sfdisk/blkid/mkfs
# for the storage volume script, `keepalived -t` for the two lbs' configuration and `ip` for the interface
# fact. lab-test: Chromium, its driver and NSS's certutil (the browser test).
CHECK_TOOLS := cloud-init:cloud-init sfdisk:fdisk blkid:util-linux mkfs.ext4:e2fsprogs keepalived:keepalived \
  ip:iproute2
LAB_TOOLS := chromium:chromium chromedriver:chromium-driver certutil:libnss3-tools
define install-missing
	@need=""; for pair in $(1); do tool=$${pair%%:*}; package=$${pair#*:}; \
	  command -v $$tool >/dev/null || [ -x /usr/sbin/$$tool ] || [ -x /sbin/$$tool ] || need="$$need $$package"; done; \
	if [ -n "$$need" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing$$need (Debian packages the tests run)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$need; \
	  else echo "error: the tests need Debian packages:$$need: run as root, or: sudo apt-get install$$need" >&2; exit 1; fi; fi
endef

check-tools:
	$(call install-missing,$(CHECK_TOOLS))

lab-tools:
	$(call install-missing,$(LAB_TOOLS))

# Debian's hey, the load generator of bench and chaos (installed as root when missing).
load-tool:
	@command -v hey >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then apt-get update -q && apt-get install -y -q hey; \
	  else echo "error: make bench and make chaos need Debian's hey: apt-get install hey" >&2; exit 1; fi; }

down: venv
	$(BIN)/fab lab-down

# The rehearsal: nodes that boot like OpenStack VMs (systemd, cloud-init with the Pulumi program's own
# user data), driven through the Pulumi provider's code (docs/cloud.md). Its own name, range and ports,
# so it runs beside a lab; override any of them as SWARMLAB_<KEY> (swarmlab.yaml).
REHEARSAL_ENV := SWARMLAB_CLUSTER=rehearsal SWARMLAB_CIDR=10.40.0.0/24 SWARMLAB_HTTP_PORT=28080 \
  SWARMLAB_HTTPS_PORT=28443 SWARMLAB_SSH_PORT=22222 SWARMLAB_STATS_PORT=28404

# The registration stack, as `make demo`; its data reaches the workers through this machine's kernel where
# the kernel has no NFS client (docs/cloud.md). REHEARSAL_STACK=hello for the stack without data.
REHEARSAL_STACK ?= registration

## rehearsal: the cloud path here: VM-like nodes, bootstrap and deploy-stack with --target rehearsal
rehearsal: venv
	$(REHEARSAL_ENV) $(BIN)/fab rehearsal --stack $(REHEARSAL_STACK)

rehearsal-down: venv
	$(REHEARSAL_ENV) $(BIN)/fab rehearsal-down

## rehearsal-test: the rehearsal's lab tests on a rehearsal of their own (not part of make test yet)
rehearsal-test: venv
	$(BIN)/pytest -m lab tests/rehearsal -v

## clean: the lab, its image cache and the machine's, then the virtualenv and tool caches
clean:
	if [ -x $(BIN)/fab ]; then $(BIN)/fab lab-down --purge --machine-cache; fi
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .import_linter_cache .grimp_cache
