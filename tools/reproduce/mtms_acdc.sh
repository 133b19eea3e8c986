#!/usr/bin/env bash
# Reproduces the tables of bundles/mtms_contrastive_cardiac_mri/docs/README.md on ACDC: a
# patient-level split of the 70 training patients (60 training, 10 validation = model selection)
# with the 10 `validation` patients of the source datalist as the test set; the multi-task teacher
# on all 60 training patients; then per seed the students on the same seeded half (30 patients):
# no KD, KD with the official code's instance InfoNCE (the default), KD with supervised
# (label-aware) region contrast, and the scale ablations (supervised contrast at one scale each,
# or at none: prediction-map distillation only); every model evaluated on the test volumes.
#   bash tools/reproduce/mtms_acdc.sh /data/acdc [student_epochs] ["0 1"]
# TRAIN_TEACHER=0 reuses models/teacher/model.pt, =skip does not even evaluate it (TEACHER_EPOCHS,
# default 30, otherwise);
# VARIANTS="baseline infonce" trains only those students. Seed 0 of the default KD student
# writes the shipped models/model.pt; everything else goes under runs/.
set -euo pipefail
data=${1:?usage: mtms_acdc.sh DATA_DIR [STUDENT_EPOCHS] [SEEDS]}
epochs=${2:-40}
seeds=${3:-0}
source "$(dirname "$0")/lib.sh"
acdc_setup mtms_contrastive_cardiac_mri "$data"
teacher="'$C/train.json','$C/train_teacher.json'"
teacher_stage "$teacher" 30
for seed in $seeds; do
    for variant in ${VARIANTS:-baseline infonce supervised encoder bottleneck decoder pmd_only}; do
        configs="'$C/train.json'"
        extra=(--seed "$seed")
        case $variant in
            baseline | supervised) configs="$configs,'$C/train_$variant.json'" ;;
            encoder | bottleneck | decoder) configs="$configs,'$C/train_supervised.json'"
                extra+=(--distilled_scales "['$variant']") ;;
            pmd_only) extra+=(--distilled_scales "[]") ;;
        esac
        if [ "$seed" != 0 ] || [ "$variant" != infonce ]; then
            extra+=(--run_name "seed${seed}_$variant" --model_dir "$R/seed${seed}_$variant")
        fi
        run "${variant}_seed$seed" --config_file "[$configs]" --epochs "$epochs" "${extra[@]}"
        run "evaluate_${variant}_seed$seed" --config_file "[$configs,'$C/evaluate.json']" "${extra[@]}"
    done
done
