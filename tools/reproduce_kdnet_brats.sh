#!/usr/bin/env bash
# Reproduces the KD-Net table of bundles/kdnet_brats_mri/docs/README.md on the BraTS subset:
# seeded split, teacher (FLAIR+T1), baseline student (T1), KD student (T1), test-set evaluation.
#   bash tools/reproduce_kdnet_brats.sh ../shared/data/brats_subset [epochs]
set -euo pipefail
data=${1:?usage: reproduce_kdnet_brats.sh DATA_DIR [EPOCHS]}
epochs=${2:-50}
B=bundles/kdnet_brats_mri
C=$B/configs
split=$B/runs/brats_split.json
mkdir -p $B/runs
python tools/split_datalist.py --datalist "$data/dataset.json" --out $split --val 2 --test 4 --seed 0
common=(--dataset_dir "$data" --datalist $split --epochs "$epochs")
run() { /usr/bin/time -f "$1 wall %e s" python -m monai.bundle run "${@:2}" "${common[@]}"; }
run teacher --config_file "['$C/train.json','$C/train_teacher.json']"
run baseline --config_file "['$C/train.json','$C/train_baseline.json']"
run kd_student --config_file "$C/train.json"
python -m monai.bundle run --config_file "['$C/train.json','$C/train_teacher.json','$C/evaluate.json']" "${common[@]}"
python -m monai.bundle run --config_file "['$C/train.json','$C/train_baseline.json','$C/evaluate.json']" "${common[@]}"
python -m monai.bundle run --config_file "['$C/train.json','$C/evaluate.json']" "${common[@]}"
