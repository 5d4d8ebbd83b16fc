# SPDX-License-Identifier: MIT OR Apache-2.0
#
# make          build liboci_registry (.so + .a) for erofs-utils 1.9.x
# make EROFS_ABI=1.8   the same for erofs-utils 1.8.0 - 1.8.6
# make test     everything a change must pass (installs what is missing)
# make demo     local registry, sample image, the library streaming layers
# make bench    performance figures as ratios against curl / openssl
# make install  the library, its header and oci_registry.pc (PREFIX, DESTDIR,
#               LIBDIR, INCLUDEDIR); EROFS_ABI=1.8 installs that layout
#               beside it as liboci_registry-erofs1.8 (oci_registry-erofs1.8.pc)

SHELL := /bin/bash
CARGO ?= cargo
CC ?= cc
EROFS_ABI ?= 1.9
WORK := $(CURDIR)/c-tests/work
BUILD := $(CURDIR)/c-tests/build

ifeq ($(EROFS_ABI),1.8)
CARGO_FLAGS := --release --features erofs-abi-108 --target-dir target/erofs-1.8
BUILT_LIB := $(CURDIR)/target/erofs-1.8/release
BUILT_INC := $(CURDIR)/include/erofs-1.8
# installed as a library of its own name (the SONAME build.rs sets)
INSTALL_NAME := oci_registry-erofs1.8
INSTALL_INCSUB := /oci_registry-erofs1.8
else ifeq ($(EROFS_ABI),1.9)
CARGO_FLAGS := --release
BUILT_LIB := $(CURDIR)/target/release
BUILT_INC := $(CURDIR)/include
INSTALL_NAME := oci_registry
INSTALL_INCSUB :=
else
$(error EROFS_ABI must be 1.8 or 1.9)
endif

CFLAGS_TEST := -std=c99 -D_GNU_SOURCE -Wall -Wextra -Werror -O1 -g
LDLIBS_TEST := -loci_registry -lcrypto -lpthread

.PHONY: all lib lib-1.8 lib-1.9 deps header-check cargo-test lint \
	c-build c-build-1.8 c-build-1.9 test demo bench clean erofs-utils \
	erofs-test fuzz fuzz-smoke install uninstall install-check

all: lib

# Programs linked in the tree need the SONAME's name beside the .so.
lib: deps
	$(CARGO) build $(CARGO_FLAGS)
	ln -sfn liboci_registry.so $(BUILT_LIB)/$(SO).$(MAJOR)

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
	bash c-tests/erofs-utils/dropin.sh $(WORK)

erofs-test: erofs-utils c-build
	bash c-tests/rig/registry.sh start $(WORK) >/dev/null
	bash c-tests/erofs-utils/mkfs_tests.sh $(WORK)
	bash c-tests/erofs-utils/mount_tests.sh $(WORK)
	bash c-tests/erofs-utils/dropin_tests.sh $(WORK)

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
	bash c-tests/rig/setup-deps.sh bench
	bash c-tests/bench/bench.sh $(WORK) $(BUILD)

# Installation: the artifacts cargo-c would make, made here (the crate's
# version gives the file names, build.rs the SONAME).
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
MAJOR := $(firstword $(subst ., ,$(VERSION)))
PREFIX ?= /usr/local
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
SO := lib$(INSTALL_NAME).so
# what the static archive needs (rustc --print native-static-libs)
PC_REQUIRES_PRIVATE := libcurl libzstd zlib libssl libcrypto
PC_LIBS_PRIVATE := -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc

install: lib
	install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR)$(INSTALL_INCSUB) \
		$(DESTDIR)$(PKGCONFIGDIR)
	install -m 0755 $(BUILT_LIB)/liboci_registry.so $(DESTDIR)$(LIBDIR)/$(SO).$(VERSION)
	ln -sfn $(SO).$(VERSION) $(DESTDIR)$(LIBDIR)/$(SO).$(MAJOR)
	ln -sfn $(SO).$(MAJOR) $(DESTDIR)$(LIBDIR)/$(SO)
	install -m 0644 $(BUILT_LIB)/liboci_registry.a $(DESTDIR)$(LIBDIR)/lib$(INSTALL_NAME).a
	install -m 0644 $(BUILT_INC)/oci_registry.h \
		$(DESTDIR)$(INCLUDEDIR)$(INSTALL_INCSUB)/oci_registry.h
	{ \
	echo 'prefix=$(PREFIX)'; \
	echo 'libdir=$(LIBDIR)'; \
	echo 'includedir=$(INCLUDEDIR)'; \
	echo; \
	echo 'Name: $(INSTALL_NAME)'; \
	echo 'Description: a blob of an OCI / Docker registry image as an erofs-utils (erofs-utils $(EROFS_ABI) layout) struct erofs_vfile'; \
	echo 'Version: $(VERSION)'; \
	echo 'Requires.private: $(PC_REQUIRES_PRIVATE)'; \
	echo 'Cflags: -I$${includedir}$(INSTALL_INCSUB)'; \
	echo 'Libs: -L$${libdir} -l$(INSTALL_NAME)'; \
	echo 'Libs.private: $(PC_LIBS_PRIVATE)'; \
	} >$(DESTDIR)$(PKGCONFIGDIR)/$(INSTALL_NAME).pc
	@echo "installed lib$(INSTALL_NAME) $(VERSION) into $(DESTDIR)$(PREFIX)"

uninstall:
	rm -f $(DESTDIR)$(LIBDIR)/$(SO).$(VERSION) $(DESTDIR)$(LIBDIR)/$(SO).$(MAJOR) \
		$(DESTDIR)$(LIBDIR)/$(SO) $(DESTDIR)$(LIBDIR)/lib$(INSTALL_NAME).a \
		$(DESTDIR)$(INCLUDEDIR)$(INSTALL_INCSUB)/oci_registry.h \
		$(DESTDIR)$(PKGCONFIGDIR)/$(INSTALL_NAME).pc
	$(if $(INSTALL_INCSUB),-rmdir $(DESTDIR)$(INCLUDEDIR)$(INSTALL_INCSUB))

clean:
	$(CARGO) clean
	rm -rf $(BUILD)
