#!/usr/bin/env bash
# Quick start, step 1: install what is missing, build, and run the main example.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
bash scripts/build.sh
./examples/uname
