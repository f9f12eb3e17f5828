#!/usr/bin/env bash
# Rebuild models/ferpipe-cnn2.onnx on CPU, in one command:
#   bash models/reproduce-ferpipe-cnn2.sh [DATASETS_DIR] [RUNS_DIR]
# One VGG-style CNN with two heads trained together: FER+ (the ten annotators' vote distributions) and FER2013 (its
# single labels), with the domain augmentation (the crops real videos give); the epoch is selected on public_test.
# Then one ONNX file with flip TTA, int8, a temperature per head fitted on public_test, and the FER2013 head blended
# with the registered ferpipe-cnn (shipped in models/). The training resumes from its checkpoint if interrupted.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
datasets=${1:-$here/../../shared/datasets}
runs=${2:-runs}
ferpipe=${FERPIPE:-ferpipe}
export OMP_WAIT_POLICY=PASSIVE  # PyTorch's OpenMP threads must not spin against other processes
ferplus="$datasets/ferplus/ferplus.parquet"
fer2013="$datasets/fer2013/fer2013.parquet"

$ferpipe train --data "$ferplus" --data "$fer2013" --out "$runs/joint" --width 48 --epochs 40 --seed 1 \
  --label-smoothing 0.1 --class-weight-power 0.3 --patience 100 --augment domain --threads 2 --no-register
$ferpipe export-model --flip-checkpoint "$runs/joint/best.pt" --data "$ferplus" --data "$fer2013" \
  --out "$runs/ferpipe-cnn2" --name ferpipe-cnn2 --int8 --blend fer2013=ferpipe-cnn --card ferpipe-cnn2.md --default
echo "done: copy $runs/ferpipe-cnn2/ferpipe-cnn2.{onnx,json} into models/ to replace the shipped model"
