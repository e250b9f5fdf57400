# kiln -- build, test, install.  `make help` lists the targets.
#
# Needs: a C11 compiler, libsqlite3-dev, libxxhash-dev, libcmocka-dev (tests).
# The CUDA toolkit is NOT needed to build: the driver and NVRTC are opened
# with dlopen at run time.

PREFIX    ?= /usr/local
CC        ?= cc
BUILD     ?= build
SONAME     = libkiln.so.0
VERSION    = 0.1.0

WARN      = -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wno-unused-parameter
CFLAGS   ?= -O2 -g
KCFLAGS   = -std=c11 $(WARN) -D_GNU_SOURCE -fPIC -fvisibility=hidden \
            -DKILN_BUILDING -Iinclude -I. -I$(BUILD)/gen $(CFLAGS)
LIBS      = -lsqlite3 -lxxhash -ldl -lpthread -lm

LIB_SRC   = $(wildcard runtime/*.c dispatch/*.c cache/*.c)
LIB_OBJ   = $(LIB_SRC:%.c=$(BUILD)/obj/%.o) $(BUILD)/obj/gen/kiln_templates.o
TEMPLATES = $(sort $(wildcard templates/*.cu templates/*.cuh templates/*.h))

# Tests: every tests/test_*.c is one cmocka program; tests/util_*.c and
# tests/ref_*.c are helpers linked into each.
TEST_SRC  = $(wildcard tests/test_*.c)
TEST_BIN  = $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
TEST_UTIL = $(wildcard tests/util_*.c tests/ref_*.c)
TEST_UOBJ = $(TEST_UTIL:%.c=$(BUILD)/obj/%.o)
# Test programs find libcmocka.so.0 beside them first (a copy in build/lib),
# so the build tree runs on machines without libcmocka (the GPU machine).
CMOCKA    = -lcmocka -Wl,-rpath,'$$ORIGIN/../lib'

.PHONY: all lib cli test tests demo install uninstall clean deps help faults bench

all: deps lib cli

help:
	@echo "make            build build/libkiln.so, build/libkiln.a and build/kiln"
	@echo "make test       build and run every test (GPU tests skip without a GPU)"
	@echo "make tests      build every test program, run none (for tests/device_run.sh)"
	@echo "make faults     the cache fault-injection suite (FAULTS_ARGS=--long for more)"
	@echo "make demo       with a GPU: HSTU forward checked and timed; without: prewarm sm_90a keys"
	@echo "make install PREFIX=/usr/local   header, libraries, CLI, kiln.pc"
	@echo "make deps       install missing Debian packages (as root) or print the apt-get line"
	@echo "make clean"

# ---------------------------------------------------------------- deps
DEPS_HDRS = /usr/include/sqlite3.h:libsqlite3-dev /usr/include/xxhash.h:libxxhash-dev \
            /usr/include/cmocka.h:libcmocka-dev
deps:
	@missing=""; for hp in $(DEPS_HDRS); do h=$${hp%%:*}; p=$${hp##*:}; \
	  [ -f "$$h" ] || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "kiln: installing$$missing"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq$$missing) >/dev/null || exit 1; \
	  else \
	    echo "kiln: missing packages. Run:"; \
	    echo "  sudo apt-get install -y$$missing"; exit 1; \
	  fi; \
	fi

# ---------------------------------------------------------------- library
lib: $(BUILD)/libkiln.so $(BUILD)/libkiln.a

$(BUILD)/embed: tools/embed.c | deps
	@mkdir -p $(dir $@)
	$(CC) -std=c11 $(WARN) -O2 -o $@ $< -lxxhash

$(BUILD)/gen/kiln_templates.c: $(BUILD)/embed $(TEMPLATES)
	@mkdir -p $(dir $@)
	$(BUILD)/embed $@ $(TEMPLATES)

$(BUILD)/obj/gen/kiln_templates.o: $(BUILD)/gen/kiln_templates.c
	@mkdir -p $(dir $@)
	$(CC) $(KCFLAGS) -Wno-overlength-strings -c -o $@ $<

$(BUILD)/obj/%.o: %.c include/kiln.h $(wildcard */*.h) | deps
	@mkdir -p $(dir $@)
	$(CC) $(KCFLAGS) -MMD -c -o $@ $<

$(BUILD)/libkiln.so: $(LIB_OBJ)
	$(CC) -shared -Wl,-soname,$(SONAME) -Wl,--no-undefined -o $@.$(VERSION) $^ $(LIBS)
	ln -sf libkiln.so.$(VERSION) $(BUILD)/$(SONAME)
	ln -sf libkiln.so.$(VERSION) $@

$(BUILD)/libkiln.a: $(LIB_OBJ)
	rm -f $@
	ar rcs $@ $^

# ---------------------------------------------------------------- CLI
cli: $(BUILD)/kiln

$(BUILD)/kiln: $(wildcard tools/kiln*.c) $(BUILD)/libkiln.a
	$(CC) $(KCFLAGS) -o $@ $(filter %.c,$^) $(BUILD)/libkiln.a $(LIBS)

# ---------------------------------------------------------------- tests
$(BUILD)/lib/libcmocka.so.0: | deps
	@mkdir -p $(dir $@)
	cp -L $$(ls /usr/lib/*/libcmocka.so.0 /usr/lib/libcmocka.so.0 /usr/lib64/libcmocka.so.0 2>/dev/null | head -n 1) $@

# Beside each program, the digest of the libkiln.a it linked (its .lib
# file): tests/device_run.sh compares it with build/libkiln.a.
$(BUILD)/tests/%: tests/%.c $(TEST_UOBJ) $(BUILD)/libkiln.a | $(BUILD)/lib/libcmocka.so.0
	@mkdir -p $(dir $@)
	$(CC) $(KCFLAGS) -Itests -o $@ $< $(TEST_UOBJ) $(BUILD)/libkiln.a $(CMOCKA) $(LIBS)
	@cksum < $(BUILD)/libkiln.a > $@.lib

test: all $(TEST_BIN)
	@KILN_BUILD=$(BUILD) sh tests/run.sh $(TEST_BIN)

# The test programs link libkiln.a (templates included): `make` alone leaves
# them as they were, and tests/device_run.sh refuses programs that linked
# another libkiln.a.
tests: all $(TEST_BIN)

# ---------------------------------------------------------------- faults
# The fault-injection suite (tests/faults/): every tests/faults/f_*.c is one
# program linked like the tests; tests/faults/run.sh runs them under a
# watchdog.  `make faults` is quick (CI); FAULTS_ARGS=--long for larger counts.
FAULT_SRC = $(wildcard tests/faults/f_*.c)
FAULT_BIN = $(FAULT_SRC:tests/faults/%.c=$(BUILD)/faults/%)
FAULT_UTIL = $(wildcard tests/faults/util_*.c)

$(BUILD)/faults/%: tests/faults/%.c $(FAULT_UTIL) $(TEST_UOBJ) $(BUILD)/libkiln.a | $(BUILD)/lib/libcmocka.so.0
	@mkdir -p $(dir $@)
	$(CC) $(KCFLAGS) -Itests -Itests/faults -o $@ $< $(FAULT_UTIL) $(TEST_UOBJ) $(BUILD)/libkiln.a $(CMOCKA) $(LIBS)

faults: all $(FAULT_BIN)
	@KILN_BUILD=$(BUILD) sh tests/faults/run.sh $(FAULTS_ARGS) $(FAULT_BIN)

# ---------------------------------------------------------------- demo, bench
$(BUILD)/kiln-demo: bench/demo.c $(TEST_UOBJ) $(BUILD)/libkiln.a
	$(CC) $(KCFLAGS) -Itests -o $@ $< $(TEST_UOBJ) $(BUILD)/libkiln.a $(LIBS)

demo: all $(BUILD)/kiln-demo
	$(BUILD)/kiln-demo

$(BUILD)/bench-engine: bench/bench_engine.c $(TEST_UOBJ) $(BUILD)/libkiln.a
	$(CC) $(KCFLAGS) -Itests -o $@ $< $(TEST_UOBJ) $(BUILD)/libkiln.a $(LIBS)

bench: all $(BUILD)/bench-engine

# ---------------------------------------------------------------- install
install: all
	install -d $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/bin
	install -m 0644 include/kiln.h $(DESTDIR)$(PREFIX)/include/
	install -m 0755 $(BUILD)/libkiln.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/
	ln -sf libkiln.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/$(SONAME)
	ln -sf libkiln.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/libkiln.so
	install -m 0644 $(BUILD)/libkiln.a $(DESTDIR)$(PREFIX)/lib/
	install -m 0755 $(BUILD)/kiln $(DESTDIR)$(PREFIX)/bin/
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' kiln.pc.in \
	  > $(DESTDIR)$(PREFIX)/lib/pkgconfig/kiln.pc

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/include/kiln.h $(DESTDIR)$(PREFIX)/lib/libkiln.* \
	  $(DESTDIR)$(PREFIX)/bin/kiln $(DESTDIR)$(PREFIX)/lib/pkgconfig/kiln.pc

clean:
	rm -rf $(BUILD)

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
