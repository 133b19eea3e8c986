#!/usr/bin/env bash
# Reproduces the tables of bundles/agnostic_transfer_la_mri/docs/README.md on LA2018:
# seeded case split (14 teacher-training, 18 transferal, 4 fine-tuning, 4 validation, 10 test),
# two teachers (UNet at 1.5 mm, SegResNet at 2 mm), pseudo labels of the transferal cases from
# each teacher and from both fused, then per seed: a student from each pseudo-label set, the
# student on the transferal cases' ground truth (upper bound), and the fused student fine-tuned
# on the 4 fine-tuning cases; every model evaluated on the test cases (Dice, HD95 in mm).
#   bash tools/reproduce/transfer_la.sh /data/la2018 [student_epochs] ["0 1 2"]
# TRAIN_TEACHERS=0 reuses models/teacher/*/model.pt (TEACHER_EPOCHS, default 100, otherwise);
# FINETUNE_EPOCHS (default 40) for the fine-tuned student; VARIANTS="fused groundtruth" trains only those
# students (default: unet segresnet fused groundtruth finetuned). Seed 0 writes the shipped models/model.pt
# (fused student), models/groundtruth/ and models/finetuned/; everything else goes under runs/.
set -euo pipefail
data=${1:?usage: transfer_la.sh DATA_DIR [STUDENT_EPOCHS] [SEEDS]}
epochs=${2:-60}
seeds=${3:-0 1 2}
source "$(dirname "$0")/lib.sh"
bundle_setup agnostic_transfer_la_mri
split=$R/la_split.json
split_datalist --datalist "$data/dataset.json" --out "$split" \
    --val 4 --test 10 --list transferal=18 --list finetune=4 --seed 0
common=(--dataset_dir "$data" --datalist "$split")
for teacher in unet segresnet; do
    configs="'$C/train.json','$C/train_teacher.json'"
    if [ "${TRAIN_TEACHERS:-1}" = 1 ]; then
        run "teacher_$teacher" --config_file "[$configs]" --teacher_name $teacher --epochs "${TEACHER_EPOCHS:-100}"
    fi
    run "evaluate_$teacher" --config_file "[$configs,'$C/evaluate.json']" --teacher_name $teacher
done
declare -A teachers=([unet]="['@teacher_unet']" [segresnet]="['@teacher_segresnet']" [fused]="['@teacher_unet','@teacher_segresnet']")
for source in unet segresnet fused; do
    run "annotate_$source" --config_file "['$C/train.json','$C/annotate.json']" \
        --teachers "${teachers[$source]}" --pseudo_label_dir "$R/pseudo_$source"
done
for seed in $seeds; do
    for variant in ${VARIANTS:-unet segresnet fused groundtruth finetuned}; do
        configs="'$C/train.json'"
        extra=(--seed "$seed")
        case $variant in
            groundtruth) configs="$configs,'$C/train_groundtruth.json'" ;;
            finetuned) configs="$configs,'$C/finetune.json'" ;;
            *) extra+=(--pseudo_label_dir "$R/pseudo_$variant") ;;
        esac
        fused_dir=$([ "$seed" = 0 ] && echo "$B/models" || echo "$R/seed${seed}_fused")
        [ $variant = finetuned ] && extra+=(--pretrained_student "$fused_dir/model.pt")
        if [ "$seed" != 0 ] || [ $variant = unet ] || [ $variant = segresnet ]; then
            extra+=(--run_name "seed${seed}_$variant" --model_dir "$R/seed${seed}_$variant")
        fi
        train_epochs=$([ $variant = finetuned ] && echo "${FINETUNE_EPOCHS:-40}" || echo "$epochs")
        run "${variant}_seed$seed" --config_file "[$configs]" --epochs "$train_epochs" "${extra[@]}"
        run "evaluate_${variant}_seed$seed" --config_file "[$configs,'$C/evaluate.json']" "${extra[@]}"
    done
done
