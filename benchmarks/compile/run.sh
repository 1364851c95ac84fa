#!/bin/bash
# Eager against --compile, end to end, each run a process in its own session (see README.md here).
# usage: benchmarks/compile/run.sh WORKDIR [bench.py options: --size small, --rounds N, --only ..., --note TEXT]
#   (needs .venv from ./dev.sh setup, Fashion-MNIST and a C++ compiler; appends to results.jsonl here)
set -euo pipefail
cd "$(dirname "$0")/../.."
work=${1:?give a work folder}
shift
export OMP_NUM_THREADS=1
exec "${PYTHON:-.venv/bin/python}" benchmarks/compile/bench.py "$work" "$@"
