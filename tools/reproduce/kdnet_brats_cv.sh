#!/usr/bin/env bash
# The cross-validated KD-Net study of bundles/kdnet_brats_mri/docs/README.md (docs/protocol.md):
# the 10 native-T1 cases of the BraTS subset in 5 folds (2 test, 2 validation, 6 training each),
# 3 mm voxels, 48^3 crops. Per fold a FLAIR+T1 teacher, then every arm and seed given, each
# evaluated on the fold's test cases (runs/evaluate_<run>/val_mean_dice_raw.csv, one row a case).
#   bash tools/reproduce/kdnet_brats_cv.sh DATA_DIR [ARMS] [SEEDS] [FOLDS]
# ARMS (default "baseline paper sweep_b0.1_t4 baseline_half sweep_b0.1_t4_half", the study of the docs):
#   baseline       student on T1, segmentation loss only
#   paper          train_paper.json: logit KL at T 4, latent KL at T 1 with weight 0.1 (the paper's)
#   tuned          train.json as shipped
#   sweep_b<B>_t<T>  standardised-MSE latent term with weight B, logit KL at temperature T
#   <arm>_half     any of these with labels on half the training cases (label_fraction 0.5); the KD
#                  terms still run on every case
# Every finished step leaves a marker, so the script can be stopped and started again: it skips
# what is done and resumes an interrupted training from its newest checkpoint. STUDENT_EPOCHS
# (200), TEACHER_EPOCHS (120), PIXDIM (3.0 mm), ROI (48) and VAL_INTERVAL (10 epochs) set the
# budget. Runs, splits and evaluations go under runs/ of the bundle (models under runs/cv/);
# `python -m tools.measure.cv_study bundles/kdnet_brats_mri/runs` tabulates them.
# FINAL=ARM (after the folds): the shipped models, trained the same way on all 10 native-T1 cases
# (8 training, 2 validation; no test case: the folds estimate how well the procedure does): the
# teacher, ARM and the baseline, under runs/final/, then copied to models/teacher/model.pt,
# models/model.pt and models/baseline/model.pt.
set -euo pipefail
data=${1:?usage: kdnet_brats_cv.sh DATA_DIR [ARMS] [SEEDS] [FOLDS]}
arms=${2:-baseline paper sweep_b0.1_t4 baseline_half sweep_b0.1_t4_half}
seeds=${3:-0 1 2}
folds=${4:-0 1 2 3 4}
source "$(dirname "$0")/lib.sh"
bundle_setup kdnet_brats_mri
cv=$R/cv
mkdir -p "$cv"
pixdim=${PIXDIM:-3.0} roi=${ROI:-48}
budget=(--pixdim "[$pixdim,$pixdim,$pixdim]" --roi_size "[$roi,$roi,$roi]" --val_interval "${VAL_INTERVAL:-10}")

# arm_setup ARM: configs (the config files) and extra (the overrides) of study arm ARM.
arm_setup() {
    local method=${1%_half}
    configs="'$C/train.json'"
    extra=()
    case $method in
        baseline) configs="$configs,'$C/train_baseline.json'" ;;
        paper) configs="$configs,'$C/train_paper.json'" ;;
        tuned) ;;
        sweep_b*_t*)
            weight=${method#sweep_b} weight=${weight%_t*}
            extra=(--latent_mode mse --latent_normalize standardize --latent_weight "$weight" --temperature "${method#*_t}") ;;
        *) echo "unknown arm '$1'; arms: baseline paper tuned sweep_b<B>_t<T>, each also as <arm>_half" >&2
            exit 2 ;;
    esac
    if [ "$method" != "$1" ]; then extra+=(--label_fraction 0.5); fi
}

[ -z "${FINAL:-}" ] || arm_setup "$FINAL"  # FINAL is any arm
for arm in $arms; do arm_setup "$arm"; done  # a misspelt arm stops the study before any training

for fold in $folds; do
    split=$cv/fold$fold.json
    split_datalist --datalist "$data/dataset.json" --out "$split" --only t1_kind=T1 \
        --folds 5 --fold "$fold" --val 2 --seed 0
    common=(--dataset_dir "$data" --datalist "$split")
    teacher=$cv/f${fold}_teacher
    stage "f${fold}_teacher" "'$C/train.json','$C/train_teacher.json'" "$teacher" "${TEACHER_EPOCHS:-120}"
    for seed in $seeds; do
        for arm in $arms; do
            arm_setup "$arm"
            case $arm in baseline*) ;; *) extra+=(--diagnostics_interval 30) ;; esac
            name=f${fold}_${arm}_s$seed
            stage "$name" "$configs" "$cv/$name" "${STUDENT_EPOCHS:-200}" --seed "$seed" \
                --teacher#checkpoint "$teacher/model.pt" "${extra[@]}"
        done
    done
done

if [ -n "${FINAL:-}" ]; then
    final=$R/final
    mkdir -p "$final"
    split_datalist --datalist "$data/dataset.json" --out "$final/split.json" --only t1_kind=T1 --val 2 --test 0 --seed 0
    common=(--dataset_dir "$data" --datalist "$final/split.json")
    train_stage final_teacher "'$C/train.json','$C/train_teacher.json'" "$final/teacher" "${TEACHER_EPOCHS:-120}"
    for arm in "$FINAL" baseline; do
        arm_setup "$arm"
        train_stage "final_$arm" "$configs" "$final/$arm" "${STUDENT_EPOCHS:-200}" --seed 0 \
            --teacher#checkpoint "$final/teacher/model.pt"
    done
    mkdir -p "$B/models/teacher" "$B/models/baseline"
    cp "$final/teacher/model.pt" "$B/models/teacher/model.pt"
    cp "$final/$FINAL/model.pt" "$B/models/model.pt"
    cp "$final/baseline/model.pt" "$B/models/baseline/model.pt"
fi
