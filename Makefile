# SPDX-License-Identifier: MIT OR Apache-2.0
#
# make          build liboci_registry (.so + .a) for erofs-utils 1.9.x
# make EROFS_ABI=1.8   the same for erofs-utils 1.8.0 - 1.8.6
# make test     everything a change must pass (installs what is missing)
# make demo     local registry, sample image, the library streaming layers
# make bench    performance figures as ratios against curl / openssl

SHELL := /bin/bash
CARGO ?= cargo
CC ?= cc
EROFS_ABI ?= 1.9
WORK := $(CURDIR)/c-tests/work
BUILD := $(CURDIR)/c-tests/build

ifeq ($(EROFS_ABI),1.8)
CARGO_FLAGS := --release --features erofs-abi-108 --target-dir target/erofs-1.8
LIBDIR := $(CURDIR)/target/erofs-1.8/release
INCDIR := $(CURDIR)/include/erofs-1.8
else ifeq ($(EROFS_ABI),1.9)
CARGO_FLAGS := --release
LIBDIR := $(CURDIR)/target/release
INCDIR := $(CURDIR)/include
else
$(error EROFS_ABI must be 1.8 or 1.9)
endif

CFLAGS_TEST := -std=c99 -D_GNU_SOURCE -Wall -Wextra -Werror -O1 -g
LDLIBS_TEST := -loci_registry -lcrypto -lpthread

.PHONY: all lib lib-1.8 lib-1.9 deps header-check cargo-test lint \
	c-build c-build-1.8 c-build-1.9 test demo bench clean erofs-utils \
	erofs-test fuzz fuzz-smoke

all: lib

lib: deps
	$(CARGO) build $(CARGO_FLAGS)

lib-1.9:
	$(MAKE) lib EROFS_ABI=1.9

lib-1.8:
	$(MAKE) lib EROFS_ABI=1.8

deps:
	bash c-tests/rig/setup-deps.sh

# The committed headers must be what build.rs generates for both layouts.
header-check: lib-1.9 lib-1.8
	@if git -C $(CURDIR) rev-parse --git-dir >/dev/null 2>&1; then \
		if ! git -C $(CURDIR) diff --exit-code --stat -- include/ || \
		   [ -n "$$(git -C $(CURDIR) status --porcelain -- include/)" ]; then \
			echo "header-check: include/ differs from what build.rs generates: commit the regenerated header" >&2; \
			exit 1; \
		fi; \
		echo "header-check: include/ is up to date"; \
	else \
		echo "header-check: not a git checkout, skipped"; \
	fi

cargo-test:
	$(CARGO) test --release
	$(CARGO) test --release --features erofs-abi-108 --target-dir target/erofs-1.8 ffi::

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --all-targets -- -D warnings
	$(CARGO) clippy --release --all-targets --features erofs-abi-108 --target-dir target/erofs-1.8 -- -D warnings

$(BUILD):
	mkdir -p $(BUILD)

# $(1): 1.9 or 1.8, $(2): library dir, $(3): include dir
define c_programs
c-build-$(1): lib-$(1) | $(BUILD)
	$(CC) $(CFLAGS_TEST) -I $(3) c-tests/harness/harness.c -o $(BUILD)/harness-$(1) \
		-L $(2) $(LDLIBS_TEST) -Wl,-rpath,$(2)
	$(CC) $(CFLAGS_TEST) -I $(3) c-tests/harness/stream_big.c -o $(BUILD)/stream_big-$(1) \
		-L $(2) $(LDLIBS_TEST) -Wl,-rpath,$(2)
	$(CC) $(CFLAGS_TEST) -I $(3) c-tests/harness/fetch.c -o $(BUILD)/fetch-$(1) \
		-L $(2) $(LDLIBS_TEST) -Wl,-rpath,$(2)
	$(CC) $(CFLAGS_TEST) -I $(3) c-tests/bench/bench_reads.c -o $(BUILD)/bench_reads-$(1) \
		-L $(2) $(LDLIBS_TEST) -Wl,-rpath,$(2)
	$(CC) $(CFLAGS_TEST) -I $(3) c-tests/harness/cycles.c -o $(BUILD)/cycles-$(1) \
		-L $(2) $(LDLIBS_TEST) -Wl,-rpath,$(2)
endef
$(eval $(call c_programs,1.9,$(CURDIR)/target/release,$(CURDIR)/include))
$(eval $(call c_programs,1.8,$(CURDIR)/target/erofs-1.8/release,$(CURDIR)/include/erofs-1.8))

c-build: c-build-1.9 c-build-1.8

test: deps header-check cargo-test lint c-build fuzz-smoke
	bash c-tests/run-tests.sh $(WORK) $(BUILD)

# Debian's erofs-utils 1.8.6 and 1.9.x with our patches (mkfs.erofs and
# erofsfuse taking oci:// sources), linked with the library.
erofs-utils: lib-1.9 lib-1.8
	bash c-tests/erofs-utils/erofs-utils.sh $(WORK)

erofs-test: erofs-utils c-build
	bash c-tests/rig/registry.sh start $(WORK) >/dev/null
	bash c-tests/erofs-utils/mkfs_tests.sh $(WORK)
	bash c-tests/erofs-utils/mount_tests.sh $(WORK)

# Time-boxed fuzzing of the parsers of untrusted bytes (the long run; a
# release run is at least 10 M executions per target, clean).
fuzz:
	bash c-tests/fuzz.sh $(FUZZ_SECONDS)

# The short run of make test: every target for FUZZ_SMOKE_RUNS executions
# from the committed seeds (the regression inputs among them).
FUZZ_SMOKE_RUNS ?= 50000
fuzz-smoke:
	FUZZ_RUNS=$(FUZZ_SMOKE_RUNS) bash c-tests/fuzz.sh

demo: deps lib-1.9 lib-1.8 | $(BUILD)
	$(CC) $(CFLAGS_TEST) -I include c-tests/demo/demo.c -o $(BUILD)/demo \
		-L target/release -loci_registry -Wl,-rpath,$(CURDIR)/target/release
	bash c-tests/demo/demo.sh $(WORK) $(BUILD)

bench: deps c-build-1.9
	bash c-tests/bench/bench.sh $(WORK) $(BUILD)

clean:
	$(CARGO) clean
	rm -rf $(BUILD)
