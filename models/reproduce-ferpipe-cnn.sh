#!/usr/bin/env bash
# Rebuild models/ferpipe-cnn.onnx from FER2013 on CPU, in one command:
#   bash models/reproduce-ferpipe-cnn.sh [FER2013.parquet] [RUNS_DIR]
# A VGG-style CNN trained on split == "train" only (epoch selected on public_test), fine-tuned by three stages of
# stochastic weight averaging (SWA at lr 0.01, then 0.005 twice; epochs selected on public_test), then one ONNX file
# that averages its probabilities over each crop and its mirror image, quantised to int8 and temperature-calibrated on
# public_test.
# Each stage resumes from its checkpoint if interrupted.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
data=${1:-$here/../../shared/datasets/fer2013/fer2013.parquet}
runs=${2:-runs}
ferpipe=${FERPIPE:-ferpipe}
export OMP_WAIT_POLICY=PASSIVE  # PyTorch's OpenMP threads must not spin against other processes

$ferpipe train --data "$data" --out "$runs/runA" --width 48 --epochs 45 --seed 1 --label-smoothing 0.1 \
  --class-weight-power 0.3 --patience 100 --no-register
$ferpipe train --data "$data" --out "$runs/swaA" --width 48 --epochs 30 --seed 11 --label-smoothing 0.1 \
  --class-weight-power 0.3 --patience 100 --init "$runs/runA/best.pt" --swa-start 1 --swa-lr 0.01 --no-register
$ferpipe train --data "$data" --out "$runs/swaA2" --width 48 --epochs 30 --seed 21 --label-smoothing 0.1 \
  --class-weight-power 0.3 --patience 100 --init "$runs/swaA/best.pt" --swa-start 1 --swa-lr 0.005 --no-register
$ferpipe train --data "$data" --out "$runs/swaA3" --width 48 --epochs 35 --seed 31 --label-smoothing 0.1 \
  --class-weight-power 0.3 --patience 100 --init "$runs/swaA2/best.pt" --swa-start 1 --swa-lr 0.005 --no-register
$ferpipe export-model --data "$data" --out "$runs/ferpipe-cnn" --name ferpipe-cnn --width 48 --int8 --default \
  --card ferpipe-cnn.md --flip-checkpoint "$runs/swaA3/best.pt"
echo "done: copy $runs/ferpipe-cnn/ferpipe-cnn.{onnx,json} into models/ to replace the shipped model"
