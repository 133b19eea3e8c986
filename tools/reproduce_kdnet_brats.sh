#!/usr/bin/env bash
# Reproduces the KD-Net table of bundles/kdnet_brats_mri/docs/README.md on the BraTS subset:
# seeded case split, teacher (FLAIR+T1, seed 0), then for each seed the student without KD and
# the KD-Net student (T1), each evaluated on the test cases (runs/evaluate_*/ *_summary.csv).
#   bash tools/reproduce_kdnet_brats.sh ../shared/data/brats_subset [epochs] ["0 1 2"]
# TRAIN_TEACHER=0 reuses models/teacher/model.pt. Seed 0 writes the shipped models/model.pt and
# models/baseline/; other seeds write under runs/seed<N>_*.
set -euo pipefail
data=${1:?usage: reproduce_kdnet_brats.sh DATA_DIR [EPOCHS] [SEEDS]}
epochs=${2:-50}
seeds=${3:-0 1 2}
B=bundles/kdnet_brats_mri
C=$B/configs
split=$B/runs/brats_split.json
mkdir -p $B/runs
python tools/split_datalist.py --datalist "$data/dataset.json" --out $split --val 2 --test 4 --seed 0
common=(--dataset_dir "$data" --datalist $split)
run() { /usr/bin/time -f "$1 wall %e s" python -m monai.bundle run "${@:2}" "${common[@]}"; }
if [ "${TRAIN_TEACHER:-1}" = 1 ]; then
    run teacher --config_file "['$C/train.json','$C/train_teacher.json']" --epochs "$epochs"
fi
run evaluate_teacher --config_file "['$C/train.json','$C/train_teacher.json','$C/evaluate.json']"
for seed in $seeds; do
    for student in baseline kd; do
        configs="'$C/train.json'"
        [ $student = baseline ] && configs="$configs,'$C/train_baseline.json'"
        if [ "$seed" = 0 ]; then
            where=()
        else
            where=(--seed "$seed" --run_name "seed${seed}_$student" --model_dir "$B/runs/seed${seed}_$student")
        fi
        run "${student}_seed$seed" --config_file "[$configs]" --epochs "$epochs" "${where[@]}"
        run "evaluate_${student}_seed$seed" --config_file "[$configs,'$C/evaluate.json']" "${where[@]}"
    done
done
