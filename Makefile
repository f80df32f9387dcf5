# rfevents — plain GNU Makefile (see README.md).
#   make            build bin/rfevents.fcgi and bin/rfevents
#   make run        start MariaDB + lighttpd + the app on 127.0.0.1:$(PORT)
#   make test       unit + integration tests; ends with "N passed, N failed"
#   make run SERVER=apache|nginx|cgi   the same behind another web server
#   make run CLUSTER=3                 a three-node Galera cluster, three web servers
#   make test TEST_SERVERS="lighttpd"  only some web servers (default: all four)
#   make fuzz       libFuzzer targets for FUZZ_SECONDS each
#   make valgrind   one FastCGI worker under valgrind for 10,000 requests (LEAK_REQUESTS=N)
#   make bench      throughput against the database's own ceiling (PROFILE=1: perf)
#   make SANITIZE=address,undefined test
PORT     ?= 8080
CONF     ?= conf
SANITIZE ?=
FUZZ_SECONDS ?= 10

CC      ?= cc
PKGS     = json-c yaml-0.1 libmariadb
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
WARN     = -Wall -Wextra -Wstrict-prototypes -Wshadow -Wno-unused-parameter -Werror
CFLAGS  ?= -O2 -g
CFLAGS  += -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE $(WARN) $(PKG_CFLAGS) -I. -MMD -MP
LDLIBS  += $(PKG_LIBS) -lfcgi -lgmp -lcrypto -lm

ifneq ($(SANITIZE),)
BUILD   ?= build-san
CFLAGS  += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS += -fsanitize=$(SANITIZE)
else
BUILD   ?= build
endif
BIN      = bin

# bin/ is shared by the plain and the sanitized build: remember which one
# linked it, so switching SANITIZE relinks every binary.
FLAVOR   = $(BIN)/.flavor-$(subst $(comma),-,$(or $(SANITIZE),plain))
comma   := ,
$(shell mkdir -p $(BIN); [ -f $(FLAVOR) ] || { rm -f $(BIN)/.flavor-*; touch $(FLAVOR); })

LIB_SRC  = $(wildcard core/*.c rules/*.c conf/*.c db/*.c) $(filter-out fcgi/main.c fcgi/cli.c,$(wildcard fcgi/*.c))
LIB_OBJ  = $(LIB_SRC:%.c=$(BUILD)/%.o)
TEST_SRC = $(wildcard tests/unit/test_*.c)
TEST_BIN = $(TEST_SRC:tests/unit/%.c=$(BIN)/%)
FUZZ_SRC = $(wildcard tests/fuzz/fuzz_*.c)

all: $(BIN)/rfevents.fcgi $(BIN)/rfevents

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/librfevents.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BIN)/rfevents.fcgi: $(BUILD)/fcgi/main.o $(BUILD)/librfevents.a $(FLAVOR)
	$(CC) $(LDFLAGS) -o $@ $(filter-out $(FLAVOR),$^) $(LDLIBS)

$(BIN)/rfevents: $(BUILD)/fcgi/cli.o $(BUILD)/librfevents.a $(FLAVOR)
	$(CC) $(LDFLAGS) -o $@ $(filter-out $(FLAVOR),$^) $(LDLIBS)

$(BIN)/test_%: $(BUILD)/tests/unit/test_%.o $(BUILD)/librfevents.a $(FLAVOR)
	$(CC) $(LDFLAGS) -o $@ $(filter-out $(FLAVOR),$^) $(LDLIBS)

# The bench's ceiling and minimal endpoint (tests/bench/ceiling.c): built with
# the tests, so that a change to db/sql.h that breaks it fails `make test`.
$(BIN)/bench-ceiling: $(BUILD)/tests/bench/ceiling.o $(BUILD)/db/sql.o $(FLAVOR)
	$(CC) $(LDFLAGS) -o $@ $(filter-out $(FLAVOR),$^) $(LDLIBS) -pthread

unit: $(TEST_BIN) $(BIN)/bench-ceiling

deps:
	@tests/stack.sh deps

run: deps all
ifeq ($(CLUSTER),3)
	tests/cluster.sh deps
	PORT=$(PORT) CONF=$(CONF) tests/cluster.sh run
else
	PORT=$(PORT) CONF=$(CONF) SERVER=$(or $(SERVER),lighttpd) tests/stack.sh run
endif

test: deps all unit
	SANITIZE=$(SANITIZE) TEST_SERVERS="$(TEST_SERVERS)" tests/run.sh

fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) tests/fuzz/run.sh

valgrind: deps all
	tests/leaks.sh

bench: deps all $(BIN)/bench-ceiling
	$(if $(PROFILE),tests/bench/profile.sh,tests/bench/run.sh)

clean:
	rm -rf build build-san build-fuzz $(BIN)

.PHONY: all unit deps run test fuzz valgrind bench clean
-include $(LIB_OBJ:.o=.d) $(BUILD)/fcgi/main.d $(BUILD)/fcgi/cli.d $(TEST_SRC:tests/unit/%.c=$(BUILD)/tests/unit/%.d) \
	$(BUILD)/tests/bench/ceiling.d
