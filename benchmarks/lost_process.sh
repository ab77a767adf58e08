#!/usr/bin/env bash
# How long the survivor of a 2-process torchrun run takes to leave when its peer is lost
# (docs/OPERATIONS.md, "A lost process"):
#
#   bash benchmarks/lost_process.sh kill    # rank 1 gets SIGKILL (the OOM killer, a failed node)
#   bash benchmarks/lost_process.sh stop train.collective_timeout=3   # rank 1 hangs (SIGSTOP)
#   bash benchmarks/lost_process.sh term    # rank 1 hangs, then SIGTERM to rank 0
#
# demo.yaml (one loader worker per process) on the CPU with gloo, a checkpoint every 5
# iterations; the peer is lost once ckpt_00000010.pt exists. Prints the seconds from the kill
# (or, for term, from the SIGTERM) until rank 0 is gone, and rank 0's error line. Further
# arguments are config overrides.
set -euo pipefail
cd "$(dirname "$0")/.."
how=${1:?kill, stop or term}
shift
py=${PYTHON:-.venv/bin/python}
work=${OUT:-runs/lost_process}
rm -rf "$work/run"
mkdir -p "$work"
OMP_NUM_THREADS=1 "$py" -m torch.distributed.run --standalone --nproc_per_node=2 train.py \
    --config demo.yaml train.out_dir="$work/run" train.iterations=100000 \
    train.checkpoint_interval=5 data.root="$work/data" "$@" > "$work/log.txt" 2>&1 &
job=$!
for _ in $(seq 1500); do
    [ -f "$work/run/checkpoints/ckpt_00000010.pt" ] && break
    kill -0 $job 2>/dev/null || { tail -20 "$work/log.txt"; exit 1; }
    sleep 0.2
done
declare -A pid
for p in $(pgrep -P $job); do
    rank=$(tr '\0' '\n' < /proc/$p/environ | sed -n 's/^RANK=//p')
    pid[$rank]=$p
done
case $how in
    kill) kill -KILL "${pid[1]}"; start=$(date +%s.%N) ;;
    stop) kill -STOP "${pid[1]}"; start=$(date +%s.%N) ;;
    term) kill -STOP "${pid[1]}"; sleep 2; kill -TERM "${pid[0]}"; start=$(date +%s.%N) ;;
    *) echo "unknown: $how (kill, stop or term)"; exit 2 ;;
esac
while [ -e /proc/"${pid[0]}" ] && [ "$(cut -d' ' -f3 /proc/"${pid[0]}"/stat)" != Z ]; do
    sleep 0.05
done
end=$(date +%s.%N)
kill -KILL "${pid[1]}" 2>/dev/null || true  # a stopped rank 1 would hold torchrun 30 s more
wait $job || true
echo "$how: rank 0 gone $(echo "$end - $start" | bc) s later"
grep -a '^error' "$work/log.txt" || { echo "no error line:"; tail -20 "$work/log.txt"; }
