#!/usr/bin/env bash
# One-go GPU benchmark run for a maintainer with a GPU.
#
# Runs, on one device, in their useful configurations:
#   1. benchmarks/train_throughput.py: widths 1.0 and 0.125 x batch 8, 64 x both layouts x
#      float32 (TF32 convolutions, PyTorch's default) and bf16 autocast x default mode,
#      cuDNN autotuning and deterministic mode            -> train_throughput_<kind>.json
#   2. the same at width 1.0 with TF32 off (true float32)  -> train_throughput_<kind>_fp32.json
#   3. benchmarks/attack_throughput.py: reference-style loop vs batched engine at widths
#      0.125 and 1.0, 50 iterations; engine sizing at widths 0.125 and 1.0, batches 36 and 8,
#      both layouts, with and without cuDNN autotuning    -> attack_throughput_<kind>.json
#   4. benchmarks/protocol_cost.py: paper-synthetic's passes, per-pass times on the device and
#      the predicted time of notebooks 02-05 in one process (--gpu-speedup 1; smoke with --tiny)
#                                                          -> protocol_cost_<profile>_<kind>.json
# <kind> is the device kind (cuda for cuda, cuda:1, ...). Each step has its own timeout; a
# failing step is reported and the others still run. Expected total: a few minutes on an H100.
#
# Usage (from anywhere; the project's .venv is used when present, else $PYTHON or python):
#   bash benchmarks/gpu_check.sh                       # --device cuda, results in benchmarks/results/
#   bash benchmarks/gpu_check.sh --device cuda:1
#   bash benchmarks/gpu_check.sh --device cpu --tiny   # try every step on a CPU in about a minute
# Options:
#   --device DEV    cpu, cuda, cuda:1, ... (default cuda)
#   --tiny          smoke sizes (each script's --tiny); default output folder becomes
#                   ${TMPDIR:-/tmp}/mer_gpu_check so committed results are never touched
#   --out-dir DIR   where the JSON files go (default benchmarks/results, or the --tiny folder)
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
device=cuda
tiny=()
out_dir=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --device) device="${2:?--device needs a value}"; shift 2 ;;
        --tiny) tiny=(--tiny); shift ;;
        --out-dir) out_dir="${2:?--out-dir needs a value}"; shift 2 ;;
        -h|--help) sed -n '2,27p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [[ -z "$out_dir" ]]; then
    if [[ ${#tiny[@]} -gt 0 ]]; then out_dir="${TMPDIR:-/tmp}/mer_gpu_check"; else out_dir="$here/results"; fi
fi
py="${PYTHON:-python}"
[[ -x "$root/.venv/bin/python" ]] && py="$root/.venv/bin/python"
kind="${device%%:*}"
mkdir -p "$out_dir"
cd "$root" || exit 1

failed=()
step() {  # step NAME TIMEOUT_SECONDS COMMAND...
    local name="$1" limit="$2"
    shift 2
    echo "== $name (timeout ${limit}s): $*"
    local start=$SECONDS
    timeout "$limit" "$@"
    local rc=$?
    echo "== $name: exit $rc after $((SECONDS - start)) s"
    [[ $rc -eq 0 ]] || failed+=("$name (exit $rc)")
}

"$py" - "$device" <<'EOF'
import sys
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())
if sys.argv[1].startswith("cuda"):
    d = torch.device(sys.argv[1])
    print("device", torch.cuda.get_device_name(d), "capability", torch.cuda.get_device_capability(d))
EOF

step train 420 "$py" benchmarks/train_throughput.py --device "$device" --widths 1.0 0.125 --batch-sizes 8 64 \
    --amp bf16 --cudnn-benchmark --deterministic "${tiny[@]}" --out "$out_dir/train_throughput_${kind}.json"
step train_fp32 180 "$py" benchmarks/train_throughput.py --device "$device" --widths 1.0 --batch-sizes 8 64 \
    --no-tf32 "${tiny[@]}" --out "$out_dir/train_throughput_${kind}_fp32.json"
step attack 300 "$py" benchmarks/attack_throughput.py --device "$device" --iters 50 --excerpts 8 --widths 0.125 1.0 \
    --sizing-widths 0.125 1.0 --batch-sizes 36 8 --repeats 5 --cudnn-benchmark "${tiny[@]}" \
    --out "$out_dir/attack_throughput_${kind}.json"
protocol=paper-synthetic
[[ ${#tiny[@]} -gt 0 ]] && protocol=smoke
step protocol 240 "$py" benchmarks/protocol_cost.py --profile "$protocol" --device "$device" --gpu-speedup 1 \
    --out "$out_dir/protocol_cost_${protocol}_${kind}.json"

echo "results in $out_dir"
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "failed: ${failed[*]}" >&2
    exit 1
fi
