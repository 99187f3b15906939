# fuzz.mk: libFuzzer targets (clang-14, ASan+UBSan), included by the Makefile.
# docs/fuzzing.md describes the targets; fuzz/run.py runs them and sums the figures.

FUZZ_CC      ?= clang-14
FUZZ_DIR     ?= build-fuzz
FUZZ_SECONDS ?= 60
FUZZ_REPLAY_SECONDS ?= 8
FUZZ_TARGETS ?= http ws pmd msgpack redis cli endpoint scope
# Extra arguments for every libFuzzer run, e.g. FUZZ_ARGS="-jobs=2 -workers=2".
FUZZ_ARGS    ?=

FUZZ_SAN    := -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_CFLAGS := -g -O1 -std=c11 -D_GNU_SOURCE -fno-omit-frame-pointer $(FUZZ_SAN) \
	-Wall -Wextra -Werror -Iinclude -Isrc/proc -I/usr/share/include/llhttp
FUZZ_PY     := $(shell pkg-config --cflags python3-embed 2>/dev/null)
FUZZ_PYLIBS := $(shell pkg-config --libs python3-embed 2>/dev/null)

FUZZ_PURE := src/base/config.c src/base/log.c src/http/tokens.c src/http/wire.c \
	src/http/guard.c src/proc/cli.c src/proc/venv.c
FUZZ_LLHTTP := $(FUZZ_DIR)/llhttp.a

fuzz_src_http     := fuzz/fuzz_http.c fuzz/fake_conn.c src/http/h1.c $(FUZZ_PURE)
fuzz_libs_http    := $(FUZZ_LLHTTP) -lev
fuzz_src_ws       := fuzz/fuzz_ws.c fuzz/fake_conn.c src/ws/ws.c src/ws/deflate.c $(FUZZ_PURE)
fuzz_libs_ws      := -lev -lwslay -lcrypto -lz
fuzz_src_pmd      := fuzz/fuzz_pmd.c src/ws/deflate.c
fuzz_libs_pmd     := -lz
fuzz_src_msgpack  := fuzz/fuzz_msgpack.c src/layer/msgpack.c
fuzz_libs_msgpack := $(FUZZ_PYLIBS)
fuzz_src_redis    := fuzz/fuzz_redis.c src/layer/rwire.c
fuzz_libs_redis   := -lev -lhiredis -lssl -lcrypto
fuzz_src_cli      := fuzz/fuzz_cli.c $(FUZZ_PURE)
fuzz_libs_cli     :=
fuzz_src_endpoint := fuzz/fuzz_endpoint.c $(FUZZ_PURE)
fuzz_libs_endpoint :=
fuzz_src_scope    := fuzz/fuzz_scope.c fuzz/fake_conn.c src/asgi/scope.c src/http/h1.c \
	src/py/strings.c $(FUZZ_PURE)
fuzz_libs_scope   := $(FUZZ_LLHTTP) -lev -lssl -lcrypto $(FUZZ_PYLIBS)

FUZZ_BINS := $(addprefix $(FUZZ_DIR)/fuzz_,$(FUZZ_TARGETS))

.PHONY: fuzz-build fuzz fuzz-replay

fuzz-build: $(FUZZ_BINS)

# llhttp is instrumented too (coverage feedback inside the parser), warnings off as in
# meson.build.
$(FUZZ_LLHTTP): /usr/share/llhttp/llhttp.c /usr/share/llhttp/api.c /usr/share/llhttp/http.c
	@mkdir -p $(FUZZ_DIR)/llhttp
	cd $(FUZZ_DIR)/llhttp && $(FUZZ_CC) -g -O1 -fsanitize=fuzzer-no-link $(FUZZ_SAN) -w \
	  -DLLHTTP_STRICT_MODE=1 -I/usr/share/include/llhttp -c $^
	ar rcs $@ $(FUZZ_DIR)/llhttp/*.o

.SECONDEXPANSION:
$(FUZZ_DIR)/fuzz_http $(FUZZ_DIR)/fuzz_scope: $(FUZZ_LLHTTP)

$(FUZZ_DIR)/fuzz_%: $$(fuzz_src_$$*) fuzz/fake_conn.h include/laurel/*/*.h src/proc/options.h
	@mkdir -p $(FUZZ_DIR)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer $(FUZZ_PY) \
	  -o $@ $(fuzz_src_$*) $(fuzz_libs_$*) -lm

# FUZZ_SECONDS per target, one after the other; new inputs go to $(FUZZ_DIR)/corpus/.
fuzz: fuzz-build
	$(PYTHON) fuzz/run.py --dir $(FUZZ_DIR) --seconds $(FUZZ_SECONDS) $(FUZZ_TARGETS) -- $(FUZZ_ARGS)

# CI: every seed input once, then FUZZ_REPLAY_SECONDS of fuzzing per target.
fuzz-replay: fuzz-build
	$(PYTHON) fuzz/run.py --dir $(FUZZ_DIR) --replay --seconds $(FUZZ_REPLAY_SECONDS) $(FUZZ_TARGETS)
