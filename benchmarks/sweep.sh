#!/usr/bin/env bash
# Runs benchmarks/continual.py for several budgets at once, one process per (budget, row, seed), each writing its own
# results file under RESULTS_DIR (default benchmarks/results/sweep): the way the defaults of jdcl were chosen.
# Every budget is a JSON of `JDCLTrainingConfig` overrides; results files are named after the budget's name.
#
#   SEEDS="0 1" ROWS="jdcl" benchmarks/sweep.sh 'base={}' 'r200={"replay_samples_per_class": 200}'
#
# Each line of the arguments is NAME=JSON. Processes run with one thread each (OMP_NUM_THREADS=1); on a GPU they share
# the device. A rerun skips the pairs already recorded, like continual.py itself.
set -uo pipefail
cd "$(dirname "$0")/.."
RESULTS_DIR=${RESULTS_DIR:-benchmarks/results/sweep}
WORK_DIR=${WORK_DIR:-benchmarks/runs/sweep}
SEEDS=${SEEDS:-0}
ROWS=${ROWS:-jdcl}
mkdir -p "$RESULTS_DIR" "$WORK_DIR"
pids=()
for spec in "$@"; do
  name=${spec%%=*}
  override=${spec#*=}
  for row in $ROWS; do
    for seed in $SEEDS; do
      OMP_NUM_THREADS=1 python benchmarks/continual.py --threads 1 --rows "$row" --seeds "$seed" \
        --override "$override" --results "$RESULTS_DIR/$name.json" --work_dir "$WORK_DIR/$name" \
        > "$RESULTS_DIR/$name-$row-seed$seed.log" 2>&1 &
      pids+=($!)
    done
  done
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
exit $status
