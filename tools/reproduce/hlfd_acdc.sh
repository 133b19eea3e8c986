#!/usr/bin/env bash
# Reproduces the tables of bundles/hlfd_tumour_ct/docs/README.md on the ACDC substitute
# (right ventricle, label 1, as the "tumour"; 2-D short-axis slices): a patient-level split of the
# 70 training patients (60 training, 10 validation = model selection) with the 10 `validation`
# patients of the source datalist as the test set; the UNet++ teacher; then per seed the ResNet-18
# student without KD, with logit KD, with attention transfer on the deepest layer, with HLFD, and
# the FLFD-only and PLFD-only ablations; every model evaluated on the test volumes.
#   bash tools/reproduce/hlfd_acdc.sh /data/acdc [student_epochs] ["0 1"]
# TRAIN_TEACHER=0 reuses runs/acdc/teacher/model.pt, =skip does not even evaluate it (TEACHER_EPOCHS,
# default 20, otherwise);
# VARIANTS="baseline hlfd" trains only those students (default: all six). Every model goes under
# runs/ (the teacher under runs/acdc/teacher, each student under runs/seed<S>_<variant>): the
# shipped weights are the BraTS study's and stay as they are.
set -euo pipefail
data=${1:?usage: hlfd_acdc.sh DATA_DIR [STUDENT_EPOCHS] [SEEDS]}
epochs=${2:-12}
seeds=${3:-0}
source "$(dirname "$0")/lib.sh"
acdc_setup hlfd_tumour_ct "$data"
common+=(--ckpt_dir "$R/acdc")  # the teacher's folder (ckpt_dir/teacher), which the students read
teacher="'$C/train.json','$C/train_teacher.json','$C/acdc_mri.json'"
teacher_stage "$teacher" 20
for seed in $seeds; do
    for variant in ${VARIANTS:-baseline logit_kd at hlfd flfd plfd}; do
        configs="'$C/train.json'"
        [ "$variant" != hlfd ] && configs="$configs,'$C/train_$variant.json'"
        configs="$configs,'$C/acdc_mri.json'"
        extra=(--seed "$seed" --run_name "seed${seed}_$variant" --model_dir "$R/seed${seed}_$variant")
        run "${variant}_seed$seed" --config_file "[$configs]" --epochs "$epochs" "${extra[@]}"
        run "evaluate_${variant}_seed$seed" --config_file "[$configs,'$C/evaluate.json']" "${extra[@]}"
    done
done
