#!/usr/bin/env bash
# One prepared GPU check, for the device machine (no Rust there). Build here first:
#   see ../shared/notes/cuda-build.md, then
#   cargo build --release --features cuda --target-dir /tmp/target-cuda
#   mkdir -p .gpu && xz -9 -c /tmp/target-cuda/release/evoattn > .gpu/evoattn.xz   (.gpu is git-ignored)
# and run this script there with `.gpu` carried. Results go to $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
xz -d -c .gpu/evoattn.xz > /tmp/evoattn && chmod +x /tmp/evoattn
# CUDA runtime libraries from the installed PyTorch (cublasLt alone is 540 MB: don't ship it).
SITE=$(python3 -c 'import site; print(site.getsitepackages()[0])')
export LD_LIBRARY_PATH="$(ls -d "$SITE"/nvidia/*/lib 2>/dev/null | tr '\n' ':')${LD_LIBRARY_PATH:-}"
export EVOATTN_DATA=${EVOATTN_DATA:-$PWD/.gpu/wikitext-2}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
for r in 1 4 16; do
  /tmp/evoattn bench --preset seed --device cuda --replicas $r --steps 50 --json | tee -a "$OUT/bench.jsonl"
done
/tmp/evoattn train --preset seed --device cuda --gene dot+softmax+none+fixed --seeds 1,2 --set steps=300 --set eval_every=100 --json \
  | tee "$OUT/train.jsonl"
/tmp/evoattn train --preset seed --device cuda --gene dot+sparsemax+output_gate+learned --seeds 1,2 --set steps=300 --set eval_every=100 --json \
  | tee -a "$OUT/train.jsonl"
