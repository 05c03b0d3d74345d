#!/usr/bin/env bash
# Configures (once) and builds the tree in place: the C library, its plugins, the Lua modules
# and the Ruby extension (so `ruby -Ibindings/ruby/lib examples/uname.rb` works from here).
set -euo pipefail
cd "$(dirname "$0")/.."
# autoreconf --install also when configure.ac changed since configure was made: make's own
# rebuild rules would rerun automake without installing an auxiliary file it newly needs
# (build-aux/tap-driver.sh, say) and fail.
if [ ! -x configure ] || [ configure.ac -nt configure ]; then
  mkdir -p m4 && autoreconf -fi >/dev/null
fi
[ -f Makefile ] || ./configure -q --enable-werror
make -s -j"$(nproc)"
(cd bindings/ruby && rake -s compile >/dev/null)
