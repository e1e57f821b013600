#!/usr/bin/env bash
# Alternating speed comparison of `evoattn bench` against the equivalent PyTorch CPU loop
# on the seed preset (dot+softmax+none+fixed, batch 32 x 64, vocab 33,278).
# Usage: PYTHON=/path/to/venv/bin/python benches/compare_pytorch.sh [rounds] [steps]
# Prints one JSON line per measurement; this machine's speed drifts, so compare rounds.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
ROUNDS=${1:-3}
STEPS=${2:-8}
BIN=target/release/evoattn
cargo build --release -q
for round in $(seq 1 "$ROUNDS"); do
  echo "{\"round\":$round,\"setting\":\"pytorch-2threads\",\"result\":$($PY benches/torch_reference.py --threads 2 --steps "$STEPS")}"
  echo "{\"round\":$round,\"setting\":\"evoattn-R1-2threads\",\"result\":$($BIN bench --preset seed --threads 2 --replicas 1 --steps "$STEPS" --json)}"
  echo "{\"round\":$round,\"setting\":\"pytorch-1thread\",\"result\":$($PY benches/torch_reference.py --threads 1 --steps "$STEPS")}"
  echo "{\"round\":$round,\"setting\":\"evoattn-R1-1thread\",\"result\":$($BIN bench --preset seed --threads 1 --replicas 1 --steps "$STEPS" --json)}"
  echo "{\"round\":$round,\"setting\":\"evoattn-R2-2threads\",\"result\":$($BIN bench --preset seed --threads 2 --replicas 2 --steps "$STEPS" --json)}"
  # two single-threaded processes at once (what `--jobs 2` does): sum their tokens/s
  a=$(mktemp); b=$(mktemp)
  $BIN bench --preset seed --threads 1 --replicas 1 --steps "$STEPS" --json >"$a" &
  $BIN bench --preset seed --threads 1 --replicas 1 --steps "$STEPS" --json >"$b"
  wait
  echo "{\"round\":$round,\"setting\":\"evoattn-2procs-R1-1thread\",\"result\":[$(cat "$a"),$(cat "$b")]}"
  rm -f "$a" "$b"
done
