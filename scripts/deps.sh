#!/usr/bin/env bash
# Installs what building and testing inparallel needs on Debian 12, if anything is missing.
# Idempotent and non-interactive: it only calls apt-get when a package is absent.
set -euo pipefail

pkgs=(build-essential autoconf automake libtool pkg-config
      libcriterion-dev valgrind git libdw-dev scdoc man-db
      clang-19 libclang-rt-19-dev
      libmsgpack-dev libprotobuf-c-dev protobuf-c-compiler
      ruby ruby-dev rake ruby-minitest ruby-msgpack ruby-google-protobuf ruby-parallel ruby-progressbar
      lua5.1 liblua5.1-0-dev lua5.3 liblua5.3-dev lua5.4 liblua5.4-dev
      luajit libluajit-5.1-dev lua-compat53-dev lua-busted luarocks lua-posix
      openmpi-bin libopenmpi-dev)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
