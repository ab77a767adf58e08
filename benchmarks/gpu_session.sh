#!/usr/bin/env bash
# What vidgan measures on a GPU (training speed, evaluation cost, torchrun), in stages that each
# fit one device-tool command (10 minutes), for the first session that is lent a GPU:
#
#   bash benchmarks/gpu_session.sh speed    # st4, st2 x fp32/bf16 x fast/plain convs, batch 32
#   bash benchmarks/gpu_session.sh naive    # naive at batch 32, and its largest batch
#   bash benchmarks/gpu_session.sh layout   # st4 bf16 with channels_last_3d / cudnn.benchmark,
#                                           # and without the per-phase isfinite host sync
#   bash benchmarks/gpu_session.sh eval     # the tgan2 evaluation protocol's wall time
#   bash benchmarks/gpu_session.sh ddp      # torchrun --nproc_per_node=1 against python
#   bash benchmarks/gpu_session.sh fvd      # I3D throughput: what fvd2048_16f / _128f cost
#   bash benchmarks/gpu_session.sh tests    # the test suite on the CUDA machine
#
# Several stages in one call: `bash benchmarks/gpu_session.sh eval ddp`. Each stage's output
# also goes to ${OUT:-runs/gpu_session}/<stage>.txt (the device tool returns $OUT). BATCH and
# EXTRA (config overrides) shrink it for a CPU smoke test, e.g.
#   BATCH=2 EXTRA="model.resolution=64 model.ch=2 model.dis_ch=2 model.clstm_ch=8" \
#       EVAL="--eval-samples 8 --eval-repeats 2 --eval-batch 4" ITERS="--warmup 1 --iterations 1" \
#       bash benchmarks/gpu_session.sh speed eval ddp
# The results go into docs/BENCHMARKS.md ("Training speed", "Many processes").
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-runs/gpu_session}
mkdir -p "$out"
batch=${BATCH:-32}
read -r -a extra <<< "${EXTRA:-}"
read -r -a eval_args <<< "${EVAL:-}"
read -r -a iters <<< "${ITERS:-}"
py=${PYTHON:-python3}

bench() { "$py" -m benchmarks.bench_train "${iters[@]}" --batch "$batch" "$@" "${extra[@]}"; }

stage() {
    case "$1" in
        speed) bench --configs ucf101_st4,ucf101_st2 --amp fp32,bf16 --conv fast,plain ;;
        naive) bench --configs ucf101_naive --amp fp32,bf16 --conv fast \
                   --max-batch ucf101_naive ;;
        layout) bench --configs ucf101_st4 --amp bf16 --conv fast --channels-last
                bench --configs ucf101_st4 --amp bf16 --conv fast --cudnn-benchmark
                bench --configs ucf101_st4,ucf101_st2 --amp bf16 --conv fast --no-finite-check ;;
        eval) bench --configs ucf101_st4 --amp bf16 --conv fast --iterations 1 --warmup 0 \
                  --eval-protocol "${eval_args[@]}" ;;
        ddp) # The same cell under torchrun with one process, then plain.
             echo "-- torchrun --standalone --nproc_per_node=1"
             "$py" -m torch.distributed.run --standalone --nproc_per_node=1 \
                 -m benchmarks.bench_train "${iters[@]}" --batch "$batch" \
                 --configs ucf101_st4 --amp bf16 --conv fast "${extra[@]}"
             echo "-- python"
             bench --configs ucf101_st4 --amp bf16 --conv fast ;;
        fvd) "$py" -m benchmarks.bench_i3d --device cuda --batch 16 --iters 5 --size 128
             "$py" -m benchmarks.bench_i3d --device cuda --batch 2 --iters 3 --size 128 \
                 --frames 128 ;;
        tests) "$py" -m pytest -q -p no:cacheprovider ;;
        *) echo "unknown stage '$1': speed, naive, layout, eval, ddp, fvd or tests" >&2
           return 2 ;;
    esac
}

command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
    --format=csv,noheader
for name in "$@"; do
    echo "== $name"
    stage "$name" 2>&1 | tee "$out/$name.txt"
done
