# Thin wrapper around meson/ninja, pytest and apt. `make help` lists the targets.

PYTHON ?= /usr/bin/python3
MESON  ?= meson
NINJA  ?= ninja

BUILD      ?= build
BUILD_ASAN ?= build-asan

# Extra arguments: `make bench BENCH_ARGS="--duration 5"`, `make test PYTEST_ARGS=-x`.
BENCH_ARGS  ?=
PYTEST_ARGS ?=
# PYTHONMALLOC=malloc: Python objects come from malloc, so ASan sees a use after a
# wrong Py_DECREF; the suppression file hides CPython's own interpreter-lifetime leaks.
ASAN_ENV    ?= ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
              LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp:print_suppressions=0 \
              UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
              PYTHONMALLOC=malloc

# Everything needed to build, test, demo and benchmark, from Debian 12's archive only.
DEPS := build-essential meson ninja-build pkg-config python3-dev libev-dev \
	libwslay-dev node-llhttp libhiredis-dev libssl-dev python3-django \
	python3-django-channels python3-channels-redis python3-daphne python3-uvicorn \
	python3-uvloop python3-httptools python3-websockets python3-pytest \
	python3-msgpack python3-selenium redis-server chromium chromium-driver wrk \
	clang-format libpython3.11-testsuite python3-matplotlib gunicorn openssl \
	python3-cryptography zlib1g-dev libnghttp2-dev nghttp2-client python3-h2 \
	python3-hypercorn curl python3-build python3-mesonpy python3-pip python3-venv \
	patchelf clang-14 libfuzzer-14-dev llvm

# What `make test-ops` needs besides DEPS: a container image built and run with podman
# (runc where crun cannot run, debootstrap for the base image), the Debian package
# (debhelper, dh-python, help2man, lintian).
OPS_DEPS := podman buildah runc debootstrap debhelper dh-python help2man lintian \
	dpkg-dev fakeroot

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# The Dockerfile linter run by tests/ops/test_dockerfile.py: installed from npm when
# npm is there (a few seconds, pure JavaScript); without it that check is skipped.
DOCKERFILELINT := dockerfilelint@1.8.0

.PHONY: help deps deps-ops build build-asan unit test test-ops soak demo bench clean

help:
	@echo "make deps        install build/test dependencies with apt (Debian 12)"
	@echo "make build       configure (once) and build $(BUILD)/laurel"
	@echo "make build-asan  the same with ASan+UBSan into $(BUILD_ASAN)/"
	@echo "make unit        C unit tests (meson test)"
	@echo "make test        both builds, meson test in both, fuzz-replay, pytest against both binaries"
	@echo "make deps-ops    install what test-ops needs (podman, debootstrap, debhelper, lintian...)"
	@echo "make test-ops    the container image (podman build/run) and the .deb (dpkg-buildpackage, lintian, install/remove)"
	@echo "make fuzz        libFuzzer targets (fuzz/, clang-14 ASan+UBSan), FUZZ_SECONDS=60 each"
	@echo "make fuzz-replay the seed corpora once, then FUZZ_REPLAY_SECONDS=8 of fuzzing each (CI)"
	@echo "make soak        soak and exhaustion at full size: 100k WebSocket cycles, 1M requests, 10k disconnects (~20 min)"
	@echo "make demo        set up and serve examples/notifications on http://127.0.0.1:8000/"
	@echo "make bench       laurel vs uvicorn vs daphne (+ gunicorn): bench/run.py, fanout.py, django_bench.py"
	@echo "make clean       remove build directories and caches"

# apt only runs when a package is missing, so repeated runs take a second.
deps:
	@missing=""; \
	for p in $(DEPS); do \
	  [ "$$(dpkg-query -W -f='$${db:Status-Status}' $$p 2>/dev/null)" = installed ] \
	    || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then \
	  echo "deps: all $(words $(DEPS)) packages already installed"; \
	else \
	  echo "deps: installing$$missing"; \
	  $(SUDO) apt-get update && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y \
	    --no-install-recommends $$missing; \
	fi
	@if command -v dockerfilelint >/dev/null; then :; \
	elif command -v npm >/dev/null; then \
	  echo "deps: npm install -g $(DOCKERFILELINT)"; \
	  $(SUDO) npm install -g --no-audit --no-fund $(DOCKERFILELINT) \
	    || echo "deps: npm install failed: no dockerfilelint (tests/ops skips that check)"; \
	else \
	  echo "deps: no npm, so no dockerfilelint (tests/ops skips that check)"; \
	fi

deps-ops:
	@missing=""; \
	for p in $(OPS_DEPS); do \
	  [ "$$(dpkg-query -W -f='$${db:Status-Status}' $$p 2>/dev/null)" = installed ] \
	    || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then \
	  echo "deps-ops: all $(words $(OPS_DEPS)) packages already installed"; \
	else \
	  echo "deps-ops: installing$$missing"; \
	  $(SUDO) apt-get update && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y \
	    --no-install-recommends $$missing; \
	fi

# Configure only when the directory has no build.ninja (--wipe a half-configured one);
# afterwards ninja re-runs meson by itself when meson.build changes.
define meson_setup
	@if [ ! -f $(1)/build.ninja ]; then \
	  if [ -f $(1)/meson-private/coredata.dat ]; then wipe=--wipe; else wipe=; fi; \
	  echo "$(MESON) setup $$wipe $(1) $(2)"; \
	  $(MESON) setup $$wipe $(1) $(2) || exit 1; \
	fi
endef

build:
	$(call meson_setup,$(BUILD),--buildtype=debugoptimized)
	$(NINJA) -C $(BUILD)

build-asan:
	$(call meson_setup,$(BUILD_ASAN),--buildtype=debug -Db_sanitize=address$(,)undefined -Db_lundef=false -Dpython_link=shared)
	$(NINJA) -C $(BUILD_ASAN)

unit: build
	$(MESON) test -C $(BUILD) --print-errorlogs

test: build build-asan
	$(MESON) test -C $(BUILD) --print-errorlogs
	$(MESON) test -C $(BUILD_ASAN) --print-errorlogs
	@# The fuzz targets' seeds, then 4 s of fuzzing each (about a minute and a half);
	@# skipped where clang-14 is missing (make deps installs it).
	@if command -v $(FUZZ_CC) >/dev/null; then \
	  $(MAKE) --no-print-directory fuzz-replay FUZZ_REPLAY_SECONDS=4; \
	else echo "test: no $(FUZZ_CC): fuzz-replay skipped (make deps installs it)"; fi
	LAUREL_BIN=$(CURDIR)/$(BUILD)/laurel $(PYTHON) -m pytest -q $(PYTEST_ARGS)
	LAUREL_BIN=$(CURDIR)/$(BUILD_ASAN)/laurel $(ASAN_ENV) $(PYTHON) -m pytest -q -x $(PYTEST_ARGS)

# The container image and the Debian package, built and run for real (a few minutes;
# the debootstrap base image is cached in /var/cache/laurel-ci). Run as root.
test-ops: build
	LAUREL_OPS=1 LAUREL_BIN=$(CURDIR)/$(BUILD)/laurel $(PYTHON) -m pytest -q -s \
	  tests/ops/test_container.py tests/ops/test_deb.py $(PYTEST_ARGS)

# The soak tests at full size (make test runs them short); figures in build/soak.jsonl.
soak: build
	rm -f $(BUILD)/soak.jsonl
	LAUREL_SOAK=full LAUREL_SOAK_OUT=$(CURDIR)/$(BUILD)/soak.jsonl \
	  LAUREL_BIN=$(CURDIR)/$(BUILD)/laurel $(PYTHON) -m pytest -q -s tests/soak $(PYTEST_ARGS)

# demo_setup migrates the SQLite database and (re)creates the demo users, idempotently.
demo: build
	cd examples/notifications && $(PYTHON) manage.py demo_setup
	@echo ""
	@echo "laurel: serving examples/notifications on http://127.0.0.1:8000/ (Ctrl-C stops)"
	@echo "  log in at http://127.0.0.1:8000/login/ as demo / laurel-demo"
	@echo "  (a second user, other / laurel-other, shows that notifications stay private)"
	@echo ""
	cd examples/notifications && ../../$(BUILD)/laurel -b 127.0.0.1 -p 8000 notifications.asgi:application

bench: build
	$(PYTHON) bench/run.py $(BENCH_ARGS)
	$(PYTHON) bench/fanout.py $(BENCH_ARGS)
	$(PYTHON) bench/django_bench.py $(BENCH_ARGS)

clean:
	rm -rf $(BUILD) $(BUILD_ASAN) $(FUZZ_DIR) .pytest_cache examples/notifications/db.sqlite3
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

include fuzz/fuzz.mk

# A literal comma for use inside $(call ...) arguments.
, := ,
