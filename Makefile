# The two commands a new user needs (README.md): `make demo` and `make test`.
# Both bootstrap .venv and install what is missing; as root they install the Debian packages too.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
APT_PACKAGES := sqlite3 libsystemd-dev pkg-config
# What only the tests run: a real Prometheus and Alertmanager, Monit (the footprint bench), a private Docker
# engine with compose, and a Debian root booted under systemd-nspawn (tests/systemd: the unit under a real systemd).
TEST_APT_PACKAGES := prometheus prometheus-alertmanager monit docker.io docker-compose systemd-container mmdebstrap

.PHONY: setup system-packages demo demo-replication test lint clean

setup: system-packages $(VENV)/.installed

system-packages:
	@missing=""; for package in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$package 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$package"; \
	done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			echo "installing Debian packages:$$missing"; \
			DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q $$missing >/dev/null || \
			{ DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q $$missing >/dev/null; }; \
		else \
			echo "missing Debian packages; run:  sudo apt-get install -y$$missing"; exit 1; \
		fi; \
	fi

$(VENV)/.installed: pyproject.toml examples/vbrpg/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,systemd]' -e examples/vbrpg
	touch $@

demo: setup
	$(BIN)/python examples/demo.py

# The same, with Litestream replicating to .demo/offsite and a corruption restored to seconds before the fault.
demo-replication: setup
	$(BIN)/python examples/demo.py --replication

# Two workers: most tests wait on real services and daemons, so two run in the time of one on 2 cores.
# loadscope: a module's tests run on one worker, so tests/systemd's share one booted container (its tests build on
# each other's state); loadgroup does not group them under pytest 9 with xdist 3.8 (seen here).
test: APT_PACKAGES += $(TEST_APT_PACKAGES)
test: setup
	$(BIN)/pytest -n 2 --dist loadscope

lint: setup
	$(BIN)/ruff check src tests examples bench
	$(BIN)/ruff format --check src tests examples bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .demo build dist src/*.egg-info .pytest_cache .ruff_cache .mypy_cache
