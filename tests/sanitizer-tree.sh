# Sourced by tests/sanitize.sh and tests/tsan.sh: the clang a sanitizer build needs, and the
# copy of the tree it builds in, so the normal in-tree build is left alone.

san_major() { "$1" -dumpversion 2>/dev/null | cut -d. -f1; }

# san_pick_cc MIN_MAJOR FLAGS [CC...]: the first clang (the CCs given, then clang-19 and later,
# then clang) of at least MIN_MAJOR that links a program built with FLAGS: the sanitizer's
# runtime (libclang-rt-N-dev) must be installed too.
san_pick_cc() {
  local min=$1 flags=$2 cc probe
  shift 2
  probe=$(mktemp /tmp/ip-san-probe.XXXXXX)
  for cc in "$@" clang-19 clang-20 clang-21 clang-18 clang; do
    command -v "$cc" >/dev/null 2>&1 || continue
    [ "$(san_major "$cc")" -ge "$min" ] 2>/dev/null || continue
    # shellcheck disable=SC2086
    echo 'int main(void){return 0;}' | "$cc" $flags -x c - -o "$probe" >/dev/null 2>&1 || continue
    rm -f "$probe"
    echo "$cc"
    return 0
  done
  rm -f "$probe"
  return 1
}

# san_cc NAME MIN_MAJOR FLAGS WHY [CC...]: san_pick_cc, installing clang-19 and its runtimes
# first when none will do and this is root on Debian; exits 2, saying WHY, when that fails.
san_cc() {
  local name=$1 min=$2 flags=$3 why=$4 cc
  shift 4
  if cc=$(san_pick_cc "$min" "$flags" "$@"); then echo "$cc"; return 0; fi
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "$name: installing clang-19 and its sanitizer runtimes" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      clang-19 libclang-rt-19-dev >/dev/null
  fi
  cc=$(san_pick_cc "$min" "$flags" "$@") || {
    echo "$name: needs clang >= $min with its runtime (apt-get install clang-19" \
      "libclang-rt-19-dev); $why" >&2
    exit 2
  }
  echo "$cc"
}

# san_tree TOP DST STAMP: DST holds the tracked and new (not ignored) files of TOP, what a
# commit of the tree would hold. A copy built for another STAMP (another compiler, an older
# script) is thrown away first.
san_tree() {
  local top=$1 dst=$2 stamp=$3
  if [ -d "$dst" ] && { [ ! -f "$dst/.stamp" ] || [ "$(cat "$dst/.stamp")" != "$stamp" ]; }; then
    rm -rf "$dst"
  fi
  mkdir -p "$dst"
  (cd "$top" && git ls-files -z --cached --others --exclude-standard) |
    (cd "$top" && xargs -0 cp --parents -u -t "$dst" 2>/dev/null || true)
}
