# Berth: the two commands are `make run` and `make test` (fresh Debian 12 is enough).
# The build itself is CMake; this file only strings the steps together.

BUILD_DIR  ?= build
TEST_DIR   ?= build-test
BUILD_TYPE ?= RelWithDebInfo
JOBS       ?= 2
# make install: under PREFIX, staged under DESTDIR when set (packaging).
PREFIX     ?= /usr/local
# `make run DEPS=true` skips the package check (e.g. without root or sudo).
DEPS       ?= deploy/install-deps

.PHONY: all deps build run test bench clean install

all: build

deps:
	$(DEPS)

build: deps
	cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE)
	cmake --build $(BUILD_DIR) -j$(JOBS)

# Foreground: Redis + every service + three simulated hosts + gateway; Ctrl-C stops it all.
run: build
	BERTH_BIN_DIR=$(BUILD_DIR)/bin exec deploy/berth-up

# The binaries, the CLI with its bash completion and man page, etc/berth/*.conf, the portal
# and the systemd units (deploy/systemd/) under PREFIX.
install: build
	DESTDIR="$(DESTDIR)" cmake --install $(BUILD_DIR) --prefix "$(PREFIX)"

# Everything under ASan+UBSan: unit tests and integration tests, through ctest.
test: deps
	cmake -S . -B $(TEST_DIR) -DCMAKE_BUILD_TYPE=Debug -DBERTH_SANITIZE=ON
	cmake --build $(TEST_DIR) -j$(JOBS)
	ctest --test-dir $(TEST_DIR) --output-on-failure -j$(JOBS)

# Benchmarks against baselines measured in the same run (not part of `make test`): a release
# build with the bench programs, then bench/run.py starts what it needs, measures, stops it all,
# prints the table and writes it to bench/results.md.
bench:
	$(DEPS) --bench
	cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) -DBERTH_BENCH=ON
	cmake --build $(BUILD_DIR) -j$(JOBS)
	python3 bench/run.py --bin $(BUILD_DIR)/bin --out bench/results.md

clean:
	rm -rf $(BUILD_DIR) $(TEST_DIR)
