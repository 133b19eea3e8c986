#!/usr/bin/env bash
# Reproduces the earlier KD-Net table of bundles/kdnet_brats_mri/docs/README.md (bundle 0.2.x; the
# current results are kdnet_brats_cv.sh's) on the BraTS subset; its 2 mm budget needs
# EXTRA_ARGS="--pixdim [2.0,2.0,2.0] --roi_size [64,64,64] --val_interval 1" since 0.3.0:
# seeded case split, teacher (FLAIR+T1, seed 0), then for each seed the student without KD and
# the KD-Net student (T1), each evaluated on the test cases (runs/*/val_mean_dice_summary.csv).
#   bash tools/reproduce/kdnet_brats.sh /data/brats_subset [epochs] ["0 1 2"]
# TRAIN_TEACHER=0 reuses models/teacher/model.pt. ABLATION=1 adds, per seed, the KD student
# without the latent term (kd_only) and without the logit term (latent_only).
# Seed 0 writes the shipped models/model.pt and models/baseline/; everything else goes under runs/.
set -euo pipefail
data=${1:?usage: kdnet_brats.sh DATA_DIR [EPOCHS] [SEEDS]}
epochs=${2:-50}
seeds=${3:-0 1 2}
source "$(dirname "$0")/lib.sh"
bundle_setup kdnet_brats_mri
split=$R/brats_split.json
split_datalist --datalist "$data/dataset.json" --out "$split" --val 2 --test 4 --seed 0
common=(--dataset_dir "$data" --datalist "$split")
if [ "${TRAIN_TEACHER:-1}" = 1 ]; then
    run teacher --config_file "['$C/train.json','$C/train_teacher.json']" --epochs "$epochs"
fi
run evaluate_teacher --config_file "['$C/train.json','$C/train_teacher.json','$C/evaluate.json']"
variants="baseline kd"
[ "${ABLATION:-0}" = 1 ] && variants="$variants kd_only latent_only"
for seed in $seeds; do
    for variant in $variants; do
        configs="'$C/train.json'"
        extra=()
        case $variant in
            baseline) configs="$configs,'$C/train_baseline.json'" ;;
            kd_only) extra=(--latent_weight 0.0) ;;
            latent_only) extra=(--kd_weight 0.0) ;;
        esac
        if [ "$seed" != 0 ] || [ "${#extra[@]}" -gt 0 ]; then
            extra+=(--seed "$seed" --run_name "seed${seed}_$variant" --model_dir "$R/seed${seed}_$variant")
        fi
        run "${variant}_seed$seed" --config_file "[$configs]" --epochs "$epochs" "${extra[@]}"
        run "evaluate_${variant}_seed$seed" --config_file "[$configs,'$C/evaluate.json']" "${extra[@]}"
    done
done
