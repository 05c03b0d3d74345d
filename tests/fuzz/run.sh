#!/usr/bin/env bash
# Builds the libFuzzer targets and runs each for SECONDS seconds from its seed corpus.
#
#   tests/fuzz/run.sh SECONDS [TARGET...]      (default: every target; `make fuzz` runs this)
#
# Targets: fuzz-frames (lib/rx.c + lib/outcome.c), fuzz-error-body (lib/frame.c),
# fuzz-msgpack, fuzz-protobuf (the serializer plugins' decoders). Each is built with clang
# -fsanitize=fuzzer,address,undefined from the lib/*.c sources directly, into
# tests/fuzz/build/. New inputs go to tests/fuzz/build/corpus/TARGET (the committed seeds in
# tests/fuzz/corpus/TARGET are only read); crashes, leaks, timeouts and OOMs are written to
# tests/fuzz/findings/. The script exits non-zero when any target found something.
#
# Environment:
#   CC              clang (default: clang)
#   FUZZ_FLAGS      extra libFuzzer flags, e.g. "-jobs=2 -workers=2" or
#                   "-fork=1 -ignore_ooms=1 -ignore_crashes=1" to keep going after a finding
#   MSGPACK_C_SRC   a msgpack-c source tree (tag c-4.0.0, matching the installed headers):
#                   its src/*.c are compiled in with the instrumentation, so the fuzzer sees
#                   and checks the library's own code; otherwise the system -lmsgpackc is used
#   MSGPACK_ALLOC_CAP_MB  with MSGPACK_C_SRC: msgpack-c's own allocations above this many MiB
#                   fail (as under RLIMIT_AS) instead of being attempted. msgpack-c sizes an
#                   array's storage from its declared count before reading any element, so
#                   without a cap fuzz-msgpack stops within seconds on a 7-byte input asking
#                   for 128 GiB; with one it goes on looking for other bugs.
#   PROTOBUF_C_SRC  likewise a protobuf-c source tree (tag v1.4.1): protobuf-c/protobuf-c.c
set -euo pipefail

if [ $# -lt 1 ] || ! [[ $1 =~ ^[0-9]+$ ]]; then
  echo "usage: $0 SECONDS [TARGET...]" >&2
  exit 2
fi
seconds=$1
shift
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"
CC=${CC:-clang}
FUZZ_FLAGS=${FUZZ_FLAGS:-}
build=tests/fuzz/build
findings=tests/fuzz/findings
mkdir -p "$build" "$findings"

if ! "$CC" --version 2>/dev/null | grep -q clang; then
  echo "run.sh: $CC is not clang; libFuzzer needs clang (and libclang-rt-dev)" >&2
  exit 2
fi
[ -f config.h ] || bash scripts/build.sh

# shellcheck disable=SC2054 # the commas belong to -fsanitize=
cflags=(-g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined
  -fno-sanitize-recover=all -Iinclude -Ilib -I. -I"$build")
# Third-party sources (*_SRC below) get coverage and ASan but not UBSan: protobuf-c 1.4.1 has
# benign upstream UB (an int shifted past bit 31 in parse_tag_and_wiretype, a zero offset
# added to NULL in parse_packed_repeated_member) that is not ours to fix.
# shellcheck disable=SC2054
thirdparty_cflags=(-g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address -w)
lib_srcs=(lib/*.c)

# Compiles third-party sources $2... into objects under $build/$1/ and prints their paths.
thirdparty() {
  local dir=$build/$1 src obj
  shift
  mkdir -p "$dir"
  for src in "$@"; do
    obj=$dir/$(basename "$src" .c).o
    # shellcheck disable=SC2086 # extra_cflags is a list of flags
    "$CC" "${thirdparty_cflags[@]}" ${extra_cflags:-} -c "$src" -o "$obj"
    echo "$obj"
  done
}

msgpack_libs=(-lmsgpackc)
protobuf_libs=(-lprotobuf-c)

build_target() {
  local t=$1 extra=()
  case $t in
  fuzz-frames | fuzz-error-body) ;;
  fuzz-msgpack)
    # msgpack-c's own sources build against the installed (same version) headers.
    [ -z "${MSGPACK_C_SRC:-}" ] ||
      mapfile -t msgpack_libs < <(extra_cflags="-Dmalloc=fuzz_capped_malloc
        -Drealloc=fuzz_capped_realloc" thirdparty msgpack-c "$MSGPACK_C_SRC"/src/*.c)
    extra=(serializers/msgpack/msgpack.c "${msgpack_libs[@]}")
    ;;
  fuzz-protobuf)
    # Generated here, so the fuzzers do not depend on a make run.
    protoc-c --c_out="$build" --proto_path=tests/proto tests/proto/sample.proto
    [ -z "${PROTOBUF_C_SRC:-}" ] ||
      mapfile -t protobuf_libs < <(thirdparty protobuf-c "$PROTOBUF_C_SRC/protobuf-c/protobuf-c.c")
    extra=(serializers/protobuf/protobuf.c "$build/sample.pb-c.c" "${protobuf_libs[@]}")
    ;;
  *)
    echo "run.sh: unknown target $t" >&2
    return 2
    ;;
  esac
  echo "== building $t"
  "$CC" "${cflags[@]}" -o "$build/$t" "tests/fuzz/$t.c" "${lib_srcs[@]}" "${extra[@]}" -lpthread
}

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(fuzz-frames fuzz-error-body fuzz-msgpack fuzz-protobuf)

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
failed=()
for t in "${targets[@]}"; do
  build_target "$t"
  seeds=tests/fuzz/corpus/$t
  work=$build/corpus/$t
  mkdir -p "$work"
  dict=()
  [ -f "tests/fuzz/$t.dict" ] && dict=(-dict="tests/fuzz/$t.dict")
  echo "== running $t for ${seconds}s"
  # shellcheck disable=SC2086 # FUZZ_FLAGS is a list of flags
  if "$build/$t" "$work" "$seeds" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$findings/$t-" "${dict[@]}" $FUZZ_FLAGS \
    2>"$build/$t.log"; then
    grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|Done [0-9]+ runs)' \
      "$build/$t.log" || true
  else
    echo "!! $t found something (log: $build/$t.log):"
    grep -E 'ERROR:|SUMMARY|Test unit written|runtime error' "$build/$t.log" | head -20 || true
    failed+=("$t")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzzing found problems in: ${failed[*]} (inputs in $findings/)"
  exit 1
fi
echo "fuzzing: no findings"
