#!/usr/bin/env bash
# The Debian packages (debian/): dpkg-buildpackage -b builds them from a clean copy of the
# committed tree (git archive HEAD into a temporary directory: never in the checkout, and
# uncommitted changes are not in it), lintian finds no error in them, and once they are
# installed, C (pkg-config inparallel and each plugin's), every Lua (5.1, 5.3, 5.4, LuaJIT),
# Ruby and man(1) find the installed library, modules and pages, and the MPI parts run under
# mpirun (examples/uname-mpi.c built with pkg-config inparallel-mpi, examples/uname-mpi.lua).
# The packages are purged at the end, also on failure, so that every other step goes on
# testing the build tree and not an installed copy (the Ruby extension, for one, links an
# installed core when pkg-config finds one).
#
# Installs what is missing for that (the build dependencies, lintian, the Lua interpreters, mpirun)
# with apt-get, as root or through sudo; those stay installed, like scripts/deps.sh's. Prints
# "tally: ..." (tests/tally.sh): a test per check, a skip for each that cannot run here.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
. tests/tally.sh

PACKAGES=(libinparallel0 libinparallel-dev libinparallel-msgpack0 libinparallel-msgpack-dev
          libinparallel-protobuf0 libinparallel-protobuf-dev libinparallel-mpi0
          libinparallel-mpi-dev lua-inparallel lua-inparallel-mpi ruby-inparallel)
# Check tools that are not build dependencies. luajit has no package on some architectures:
# its check is skipped there, and LuaJIT loads lua-inparallel's 5.1 module anyway.
# mpi-default-bin: mpirun, of the MPI that mpi-default-dev (a build dependency) built against.
TOOLS=(build-essential dpkg-dev lintian man-db lua5.1 lua5.3 lua5.4 luajit mpi-default-bin)

skip_all() { # WHY
  echo "skipped: Debian packages: every check: $1"
  tally_add 0 0 1; exit 0
}
ok() { echo "ok: $1"; tally_add 1 0 0; }
fail() { echo "FAILED: $1"; tally_add 0 1 0; }
skip() { echo "skipped: Debian packages: $1"; tally_add 0 0 1; }


SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO=(sudo -n)
  else SUDO=(none); fi
fi
can_root() { [ "${SUDO[0]:-}" != none ]; }
as_root() { "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive "$@"; }

installed() { # the packages of the arguments that are installed
  local p
  for p; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' && echo "$p"
  done
}

updated=no
# apt_update: once, before the first install; fails without a network (or an apt source):
# --error-on=any, since apt-get update only warns about an index it could not fetch.
apt_update() {
  [ "$updated" = yes ] && return 0
  as_root apt-get update -qq --error-on=any >"$work/apt-update.log" 2>&1 ||
    { cat "$work/apt-update.log"; return 1; }
  updated=yes
}

work=
installed_here=no
# Every way out comes here: the packages are purged (when this run installed them), the tally
# printed, and the status says whether anything failed.
finish() {
  trap - EXIT
  cd / || true
  if [ "$installed_here" = yes ]; then
    # shellcheck disable=SC2046
    as_root apt-get purge -y -qq $(installed "${PACKAGES[@]}") >"$work/purge.log" 2>&1
    local left
    left=$(installed "${PACKAGES[@]}")
    if [ -n "$left" ]; then
      cat "$work/purge.log"; fail "apt-get purge left installed: ${left//$'\n'/ }"
    else ok "the packages are purged again"; fi
  fi
  [ -n "$work" ] && rm -rf "$work"
  tally_line
  ((TALLY_F == 0)) && exit 0
  exit 1
}
trap finish EXIT
trap 'exit 130' INT TERM

git rev-parse --is-inside-work-tree >/dev/null 2>&1 ||
  skip_all "not a git checkout (the packages are built from git archive HEAD)"
{ command -v apt-get && command -v dpkg-query; } >/dev/null || skip_all "not a Debian system"
work=$(mktemp -d "${TMPDIR:-/tmp}/ip-deb.XXXXXX")
chmod 755 "$work" # apt's _apt user reads the .debs from here

# The committed tree, unpacked where nothing of the checkout's build can leak in.
src=$work/inparallel
mkdir -p "$src"
git archive HEAD | tar -x -C "$src" || { fail "git archive HEAD"; exit 1; }
[ -z "$(git status --porcelain --untracked-files=no)" ] ||
  echo "note: the checkout has uncommitted changes; this tests HEAD without them"

# What is missing: the tools (dpkg-dev first: dpkg-checkbuilddeps reads the rest from
# debian/control). The nocheck profile drops Criterion, which only dh_auto_test needs.
missing=()
for p in "${TOOLS[@]}"; do [ -n "$(installed "$p")" ] || missing+=("$p"); done
if ((${#missing[@]})); then
  can_root || skip_all "${missing[*]} missing, and installing needs root (not root, no sudo without a password)"
  apt_update || skip_all "apt-get update failed (no network?); missing: ${missing[*]}"
  echo "installing ${missing[*]}"
  if ! as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$work/apt.log" 2>&1; then
    # One by one: a tool this architecture has no package for skips its own check below.
    for p in "${missing[@]}"; do
      as_root apt-get install -y -qq --no-install-recommends "$p" >"$work/apt.log" 2>&1 ||
        echo "note: could not install $p: $(tail -1 "$work/apt.log")"
    done
  fi
fi
if ! (cd "$src" && dpkg-checkbuilddeps -P nocheck) 2>"$work/builddeps"; then
  can_root || skip_all "$(cat "$work/builddeps"), and installing needs root (not root, no sudo without a password)"
  apt_update || skip_all "apt-get update failed (no network?): $(cat "$work/builddeps")"
  echo "installing the build dependencies: $(sed 's/.*: //' "$work/builddeps")"
  if ! (cd "$work" && as_root apt-get build-dep -y -qq -P nocheck ./inparallel) >"$work/apt.log" 2>&1; then
    cat "$work/apt.log"; fail "apt-get build-dep"; exit 1
  fi
fi
for p in dpkg-buildpackage lintian; do
  command -v "$p" >/dev/null || { fail "no $p after installing it"; exit 1; }
done

# A native package's version is the release's: the changelog must say the one configure.ac does.
want=$(sed -n 's/^AC_INIT(\[inparallel\], \[\([^]]*\)\].*/\1/p' "$src/configure.ac")
got=$(cd "$src" && dpkg-parsechangelog -S Version)
if [ "$got" = "$want" ]; then ok "debian/changelog's version is configure.ac's ($want)"
else fail "debian/changelog says $got, configure.ac $want: add a changelog entry (dch -v $want)"; fi

# nocheck: scripts/test.sh runs every suite on the build tree already; the packages' own
# make check would run the C suites once more.
start=$SECONDS
if (cd "$src" && DEB_BUILD_OPTIONS="nocheck parallel=$(nproc)" \
      dpkg-buildpackage -us -uc -b -Pnocheck) >"$work/build.log" 2>&1; then
  ok "dpkg-buildpackage -b ($((SECONDS - start)) s)"
else
  tail -60 "$work/build.log"; fail "dpkg-buildpackage -b (its log's end is above)"; exit 1
fi
debs=()
for p in "${PACKAGES[@]}"; do
  f=$(ls "$work/${p}_"*.deb 2>/dev/null | head -1)
  if [ -n "$f" ]; then debs+=("$f"); else fail "no $p package was built"; fi
done
((${#debs[@]} == ${#PACKAGES[@]})) || exit 1

# Errors fail the step; warnings are shown (the report of this step's author lists the known ones).
lintian --fail-on error "$work"/inparallel_*.changes >"$work/lintian" 2>&1
rc=$?
grep -v 'running with root privileges is not recommended' "$work/lintian"
if ((rc == 0)) && ! grep -q '^E: ' "$work/lintian"; then
  ok "lintian: no error ($(grep -c '^W: ' "$work/lintian") warnings)"
else fail "lintian found errors (above)"; fi

if ! can_root; then
  for c in "apt-get install" examples/uname.c examples/uname-msgpack.c examples/uname-protobuf.c \
           examples/uname-mpi.c lua5.1 lua5.3 lua5.4 luajit examples/uname-mpi.lua ruby "man -w"; do
    skip "$c: installing the packages needs root (not root, no sudo without a password)"
  done
  exit
fi
before=$(installed "${PACKAGES[@]}")
[ -z "$before" ] || echo "note: installed before this run, replaced now and purged at the end: ${before//$'\n'/ }"
installed_here=yes
if as_root apt-get install -y -qq --no-install-recommends "${debs[@]}" >"$work/install.log" 2>&1; then
  ok "apt-get install the ${#debs[@]} packages"
else
  cat "$work/install.log"; fail "apt-get install the packages"; exit 1
fi

# Every check in an empty directory with a bare environment: only what is installed can be found.
mkdir "$work/check" && cd "$work/check" || exit 1
clean() { env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$work/check" "$@"; }
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH)

# c_example NAME PKG [SOURCES...]: compiles examples/NAME.c with pkg-config PKG and runs it.
c_example() {
  local name=$1 pkg=$2; shift 2
  if ! clean sh -c 'cc "$@" $(pkg-config --cflags --libs '"$pkg"')' cc -I. "$src/examples/$name.c" \
         "$@" -o "$name" >"$name.log" 2>&1; then
    cat "$name.log"; fail "cc examples/$name.c with pkg-config $pkg"
  elif ! clean timeout 60 "./$name" >"$name.out" 2>&1 || [ ! -s "$name.out" ]; then
    cat "$name.out"; fail "examples/$name.c built with pkg-config $pkg: it failed or printed nothing"
  else
    ok "cc examples/$name.c \$(pkg-config --cflags --libs $pkg) builds and runs"
  fi
}
c_example uname inparallel
c_example uname-msgpack inparallel-msgpack
if clean protoc-c --c_out=. --proto_path="$src/examples" "$src/examples/uname.proto" >protoc.log 2>&1; then
  c_example uname-protobuf inparallel-protobuf uname.pb-c.c
else
  cat protoc.log; fail "protoc-c examples/uname.proto"
fi

# libinparallel-mpi: examples/uname-mpi.c, built with pkg-config inparallel-mpi, on 2 ranks
# under mpirun (rank 0 and one worker rank). It exits 0 when exactly its one call meant to fail
# (kilo.local) failed. Open MPI refuses to run as root unless told so twice.
mpirun_env=()
[ "$(id -u)" -eq 0 ] && mpirun_env=(OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1)
# mpi_run NP COMMAND...: under mpirun (with a guard against a hang), in the bare environment.
mpi_run() {
  local np=$1; shift
  clean env "${mpirun_env[@]}" timeout -k 5 120 mpirun --oversubscribe -np "$np" "$@"
}
if ! command -v mpirun >/dev/null; then
  skip "examples/uname-mpi.c under mpirun: no mpirun (Debian: mpi-default-bin)"
elif ! clean sh -c 'cc "$@" $(pkg-config --cflags --libs inparallel-mpi)' cc \
       "$src/examples/uname-mpi.c" -o uname-mpi >uname-mpi.log 2>&1; then
  cat uname-mpi.log; fail "cc examples/uname-mpi.c with pkg-config inparallel-mpi"
elif ! mpi_run 2 ./uname-mpi >uname-mpi.out 2>&1 ||
     ! grep -q 'FAILED.*cannot reach kilo.local' uname-mpi.out; then
  cat uname-mpi.out; fail "examples/uname-mpi.c built with pkg-config inparallel-mpi: mpirun -np 2"
else
  ok "cc examples/uname-mpi.c \$(pkg-config --cflags --libs inparallel-mpi) builds, mpirun -np 2 runs it"
fi

# Each Lua loads the module from its own directory in the system's module path (dh-lua's
# layout; LuaJIT shares 5.1's) and runs a map on it.
cat >check.lua <<'EOF'
local ip = require "inparallel"
local r = ip.map(function(x) return x * x end, {1, 2, 3}, {workers = 2})
assert(r[1] == 1 and r[2] == 4 and r[3] == 9, "ip.map gave wrong results")
for l in io.lines("/proc/self/maps") do
  local path = l:match("%s(/%S+/inparallel%.so)$")
  if path then print(path) return end
end
EOF
# lua_loads SCRIPT SO WHAT: under each Lua, SCRIPT prints the path of the SO it loaded, which
# must be that Lua's own in the installed layout.
lua_loads() {
  local lua exe want got
  for lua in lua5.1:5.1 lua5.3:5.3 lua5.4:5.4 luajit:5.1; do
    exe=${lua%%:*} want=/usr/lib/$multiarch/lua/${lua#*:}/$2
    if ! command -v "$exe" >/dev/null; then skip "$exe $3: not installed (no package here?)"; continue; fi
    got=$(clean timeout 60 "$exe" "$1" 2>&1)
    if [ "$got" = "$want" ]; then ok "$exe: $3 loads $want"
    else echo "$got"; fail "$exe: $3 (wanted $want)"; fi
  done
}
lua_loads check.lua inparallel.so 'require "inparallel" (and ip.map works)'

# ip.mpi: each Lua loads lua-inparallel-mpi's inparallel_mpi.so beside its inparallel.so (no
# MPI_Init yet: loading only), then Lua 5.4 runs examples/uname-mpi.lua on 2 ranks under mpirun.
cat >check-mpi.lua <<'EOF'
local ip = require "inparallel"
assert(type(ip.mpi) == "table" and type(ip.mpi.pool) == "function", "no ip.mpi")
for l in io.lines("/proc/self/maps") do
  local path = l:match("%s(/%S+/inparallel_mpi%.so)$")
  if path then print(path) return end
end
EOF
lua_loads check-mpi.lua inparallel_mpi.so 'require "inparallel".mpi'
if ! command -v mpirun >/dev/null || ! command -v lua5.4 >/dev/null; then
  skip "examples/uname-mpi.lua under mpirun: no mpirun or no lua5.4"
elif ! mpi_run 2 lua5.4 "$src/examples/uname-mpi.lua" >uname-mpi-lua.out 2>&1 ||
     ! grep -q 'FAILED.*cannot reach kilo.local' uname-mpi-lua.out; then
  cat uname-mpi-lua.out; fail "mpirun -np 2 lua5.4 examples/uname-mpi.lua"
else
  ok "mpirun -np 2 lua5.4 examples/uname-mpi.lua: ip.mpi runs the calls on the other rank"
fi

want=$(clean ruby -rrbconfig -e 'print RbConfig::CONFIG["vendorarchdir"]')/inparallel/inparallel.so
got=$(clean timeout 60 ruby -e 'require "inparallel"
  r = InParallel.map([1, 2, 3], workers: 2) { |x| x * x }
  abort "InParallel.map gave #{r.inspect}" unless r == [1, 4, 9]
  puts $LOADED_FEATURES.grep(%r{/inparallel/inparallel\.so\z})' 2>&1)
if [ "$got" = "$want" ]; then ok "ruby: require \"inparallel\" loads $want, InParallel.map works"
else echo "$got"; fail "ruby: require \"inparallel\" (wanted $want)"; fi

if ! command -v man >/dev/null; then
  skip "man: no man(1) here (Debian: man-db)"
elif grep -rqs '^path-exclude.*/usr/share/man' /etc/dpkg/dpkg.cfg.d/; then
  skip "man: dpkg is set to leave out manual pages here (/etc/dpkg/dpkg.cfg.d)"
else
  for page in ip_call ip_mpi_pool; do
    got=$(clean man -w "$page" 2>&1)
    if [[ $got == /usr/share/man/man3/$page.3* ]]; then ok "man -w $page: $got"
    else echo "$got"; fail "man -w $page"; fi
  done
fi
# finish (the EXIT trap) purges the packages and prints the tally.
