#!/usr/bin/env bash
# The experiments' figures from one bounded run on a GPU machine (docs/results/README.md says
# which tables came from it): the synthetic default ablation (camera and shared BN, seeds
# 0-2, random walk and FedAvg), one process per BN mode and seed, and beside them the
# paper-scale ablation (ResNet-50 at 256x128, seed 0), all sharing the GPU; before them, alone
# on the machine, the paper's Table 2 timings (``profile --paper``).
#
#   benchmarks/gpu_experiments.sh OUT [SECONDS]
#
# Every finished row is kept as its own result.json (the commands resume from them).
# OUT/results.tgz is refreshed every minute and at the end, so a run stopped at SECONDS still
# returns what finished; the weights files are left out of it. Environment: PYTHON (default
# python3), WORK (default /tmp/dmnreid-gpu), EXTRA (run-config added to every command, e.g.
# the tests' tiny network for a dry run on a CPU).
set -u
out=${1:?usage: benchmarks/gpu_experiments.sh OUT [SECONDS]}
limit=${2:-540}
py=${PYTHON:-python3}
work=${WORK:-/tmp/dmnreid-gpu}
extra=${EXTRA:-}
mkdir -p "$out" "$work"
export DMNREID_CACHE=${DMNREID_CACHE:-$work/cache} PYTHONUNBUFFERED=1 MPLBACKEND=Agg
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}  # seven processes share the cores
began=$SECONDS

{ nvidia-smi -L 2>&1; nproc; "$py" -c "import torch; print('torch', torch.__version__, 'cuda', \
torch.version.cuda, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"
} > "$out/machine.txt" 2>&1
[ "${PROFILE:-1}" = 1 ] && "$py" -m pytest -q -p no:cacheprovider tests/test_compute.py \
  > "$out/test_compute.txt" 2>&1 &

snapshot() {
  (cd "$work" && tar czf "$out/results.part" --exclude='*.pt' --exclude=cache \
    --ignore-failed-read ablation ablation-resnet50 profile ./*.log 2>/dev/null)
  mv "$out/results.part" "$out/results.tgz"
}

# the caches every process reads (node folders, source domain, ResNet-18 stand-in), made once
"$py" - "$extra" > "$work/warm.log" 2>&1 <<'EOF'
import sys
from dmnreid.experiments.settings import run_config
from dmnreid.prepare import prepare_partitions
from dmnreid.reid.pretrain import ensure_source_weights
cfg = run_config([sys.argv[1]])
prepare_partitions(cfg)
if cfg.pretrained_weights == "synthetic-source":
    ensure_source_weights(cfg)
EOF
echo "caches ready after $((SECONDS - began)) s" >> "$work/warm.log"
if [ "${PROFILE:-1}" = 1 ]; then  # PROFILE=0: a second call that continues the rows
  timeout 150 "$py" -m dmnreid.experiments profile --paper --paper-repeats 5 \
    --run-config "$extra" --out "$work/profile" > "$work/profile.log" 2>&1
  echo "profiled after $((SECONDS - began)) s" >> "$work/warm.log"
fi

pids=()
for seed in 0 1 2; do
  for bn in camera shared; do
    "$py" -m dmnreid.experiments ablation --run-config "$extra" --seeds "$seed" \
      --bn-modes "$bn" --walk-strategies random-walk,fedavg --out "$work/ablation" \
      > "$work/ablation-$bn-$seed.log" 2>&1 &
    pids+=($!)
  done
done
"$py" -m dmnreid.experiments ablation --seeds 0 --bn-modes camera \
  --run-config "arch='resnet50' image-height=256 image-width=128 $extra" \
  --rows baseline,rw,rw+t,rw+t+i --out "$work/ablation-resnet50" \
  > "$work/ablation-resnet50.log" 2>&1 &
pids+=($!)

last=$SECONDS
while [ $((SECONDS - began)) -lt "$limit" ]; do
  running=0
  for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && running=1; done
  [ "$running" = 0 ] && break
  sleep 5
  if [ $((SECONDS - last)) -ge 60 ]; then snapshot; last=$SECONDS; fi
done
for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
wait
echo "stopped after $((SECONDS - began)) s" >> "$work/warm.log"
snapshot
