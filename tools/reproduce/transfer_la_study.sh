#!/usr/bin/env bash
# The network-agnostic transfer study of bundles/agnostic_transfer_la_mri/docs/README.md
# (docs/protocol.md) on LA2018. A seeded case split: two teachers trained on disjoint cases (UNet
# at 1.5 mm on `training`, SegResNet at 2 mm on `segresnet_training`, 7 each), a transferal set
# larger than either (16, never overlapping test), 4 labelled fine-tuning cases, 6 validation
# (model selection, early stopping) and 10 test cases. Then pseudo labels of the transferal cases
# from each teacher and fused, the error overlap of the teachers, and per seed every student arm,
# each evaluated on the test cases (runs/evaluate_<run>/test_mean_dice_raw.csv).
#   bash tools/reproduce/transfer_la_study.sh DATA_DIR [ARMS] [SEEDS]
# ARMS (default: all but fused_large); students are train.json's compact UNet (151 k parameters)
# unless said otherwise:
#   labelled_only   the 4 fine-tuning cases' labels alone (no transfer: what the site has)
#   unet, segresnet, fused   pseudo labels of one teacher, or both fused (mean probability)
#   fused_conf      fused, voxels under 0.8 confidence ignored (confidence_threshold 0.8)
#   fused_soft      fused probabilities as soft targets (train_soft.json)
#   finetuned       the fused student of the same seed, fine-tuned on batches mixing the pseudo-
#                   labelled and the 4 labelled cases, early stopping on validation (finetune_mixed.json)
#   groundtruth     the transferal cases' ground truth (the upper bound of the transfer)
#   fused_large     fused, with the BasicUNet student of 0.3.x (student_basicunet.json, 1.42 M parameters)
#   nnunet          pseudo labels of an nnU-Net v2 teacher (annotate_nnunet.json), a hospital's model:
#                   nnU-Net's own commands plan and preprocess the teachers' 14 cases (`training` and
#                   `segresnet_training`; 3d_fullres at 1.5 mm, -gpu_memory_target NNUNET_MEMORY_GB,
#                   default 1: a patch that fits 2 CPU cores) and its trainer trains on all of them
#                   (tools/reproduce/nnunet_train.py: NNUNET_EPOCHS x NNUNET_ITERATIONS, default 25 x 40:
#                   about 2 h on 2 CPU cores); its label maps of the test cases are evaluated as
#                   runs/evaluate_f0_teacher_nnunet
#   nnunet_finetuned   the nnunet student of the same seed, mixed fine-tuning as above
# (the nnunet arms need requirements-nnunet.txt; they run only when asked for)
# Runs are named f0_<arm>_s<seed>, teachers f0_teacher_<name> (tools.measure.cv_study tabulates
# them, `--baseline teacher_unet` pairs every student with a teacher); everything goes under
# runs/study/, each finished step leaves a marker, so the script can be stopped and started again.
# STUDENT_EPOCHS (60), TEACHER_EPOCHS (100), FINETUNE_EPOCHS (40), VAL_INTERVAL (2 epochs) set the
# budget; N_TEACHER (7), N_TRANSFERAL (16), N_FINETUNE (4), N_VAL (6), N_TEST (10) the split.
set -euo pipefail
data=${1:?usage: transfer_la_study.sh DATA_DIR [ARMS] [SEEDS]}
arms=${2:-labelled_only unet segresnet fused fused_conf fused_soft finetuned groundtruth}
seeds=${3:-0 1 2}
source "$(dirname "$0")/lib.sh"
bundle_setup agnostic_transfer_la_mri
study=$R/study
mkdir -p "$study"
split=$study/la_split.json
split_datalist --datalist "$data/dataset.json" --out "$split" --val "${N_VAL:-6}" --test "${N_TEST:-10}" \
    --list segresnet_training="${N_TEACHER:-7}" --list transferal="${N_TRANSFERAL:-16}" \
    --list finetune="${N_FINETUNE:-4}" --seed 0
if [ "$("$PYTHON" -c "import json, sys; print(len(json.load(open(sys.argv[1]))['training']))" "$split")" != "${N_TEACHER:-7}" ]; then
    echo "the split left a UNet teacher set of another size than N_TEACHER (${N_TEACHER:-7}): see $split" >&2
    exit 2
fi
common=(--dataset_dir "$data" --datalist "$split")
budget=(--val_interval "${VAL_INTERVAL:-2}")
teacher_configs="'$C/train.json','$C/train_teacher.json'"
stage f0_teacher_unet "$teacher_configs" "$study/f0_teacher_unet" "${TEACHER_EPOCHS:-100}" \
    --teacher_name unet --train_key training
stage f0_teacher_segresnet "$teacher_configs" "$study/f0_teacher_segresnet" "${TEACHER_EPOCHS:-100}" \
    --teacher_name segresnet --train_key segresnet_training

# annotate SOURCE ARGS...: pseudo labels of the transferal cases into runs/study/pseudo_SOURCE
# (with the overlays in ANNOTATE_OVERLAYS, e.g. the nnU-Net teacher's).
annotate() {
    local dir=$study/pseudo_$1
    if [ ! -e "$dir/datalist.json" ]; then
        run "annotate_$1" --config_file "['$C/train.json','$C/annotate.json'${ANNOTATE_OVERLAYS:-}]" --pseudo_label_dir "$dir" \
            --teacher_unet#checkpoint "$study/f0_teacher_unet/model.pt" \
            --teacher_segresnet#checkpoint "$study/f0_teacher_segresnet/model.pt" "${@:2}"
    fi
}
annotate unet --teachers "['@teacher_unet']"
annotate segresnet --teachers "['@teacher_segresnet']"
annotate fused
annotate fused_conf --confidence_threshold 0.8
annotate fused_soft --save_probabilities True
"$PYTHON" -m tools.measure.pseudo_label_quality --dataset_dir "$data" --datalist "$split" \
    --pseudo unet "$study/pseudo_unet" --pseudo segresnet "$study/pseudo_segresnet" \
    --pseudo fused "$study/pseudo_fused" --pseudo fused_conf "$study/pseudo_fused_conf" | tee "$study/pseudo_labels.md"

# nnunet_teacher: the nnU-Net teacher of the nnunet arms (once), its pseudo labels of the transferal
# cases, and its label maps of the test cases evaluated against their ground truth.
nnunet_teacher() {
    local nn=$study/nnunet id=${NNUNET_ID:-101}
    export nnUNet_raw=$nn/raw nnUNet_preprocessed=$nn/preprocessed nnUNet_results=$nn/results
    export nnUNet_n_proc_DA=${NNUNET_WORKERS:-2}
    if [ ! -e "$nn/trained" ]; then
        "$PYTHON" -m tools.data.nnunet_raw --datalist "$split" --dataset_dir "$data" --key training \
            --key segresnet_training --out "$nnUNet_raw/Dataset${id}_LA" --channel MRI --label background --label left_atrium
        # nnUNetv2_plan_and_preprocess, run with PYTHON (its script need not be on PATH)
        "$PYTHON" -c "import sys; from nnunetv2.experiment_planning.plan_and_preprocess_entrypoints import \
plan_and_preprocess_entry as main; sys.argv[0] = 'nnUNetv2_plan_and_preprocess'; main()" \
            -d "$id" -c 3d_fullres -np 2 -gpu_memory_target "${NNUNET_MEMORY_GB:-1}" \
            -overwrite_target_spacing 1.5 1.5 1.5 -overwrite_plans_name nnUNetPlans_CPU
        /usr/bin/time -f "nnunet_teacher wall %e s" "$PYTHON" -m tools.reproduce.nnunet_train "$id" 3d_fullres all \
            --plans nnUNetPlans_CPU --epochs "${NNUNET_EPOCHS:-25}" --iterations "${NNUNET_ITERATIONS:-40}"
        touch "$nn/trained"
    fi
    local results=$nnUNet_results/Dataset${id}_LA/nnUNetTrainer__nnUNetPlans_CPU__3d_fullres
    local teacher=(--teachers "['@teacher_nnunet']" --nnunet_results "$results" --nnunet_folds "['all']")
    ANNOTATE_OVERLAYS=",'$C/annotate_nnunet.json'" annotate nnunet "${teacher[@]}"
    ANNOTATE_OVERLAYS=",'$C/annotate_nnunet.json'" annotate nnunet_test "${teacher[@]}" --transferal_key test
    if [ ! -e "$R/evaluate_f0_teacher_nnunet/test_mean_dice_raw.csv" ]; then
        "$PYTHON" -m tools.measure.pseudo_label_quality --dataset_dir "$data" --datalist "$split" --key test \
            --pseudo nnunet "$study/pseudo_nnunet_test" --raw_csv "$R/evaluate_f0_teacher_nnunet"
    fi
}
case " $arms " in *" nnunet"*) nnunet_teacher ;; esac

for seed in $seeds; do
    for arm in $arms; do
        configs="'$C/train.json'"
        epochs=${STUDENT_EPOCHS:-60}
        case $arm in
            labelled_only) configs="$configs,'$C/train_groundtruth.json'" extra=(--train_key finetune) ;;
            unet | segresnet | fused | fused_conf) extra=(--pseudo_label_dir "$study/pseudo_$arm") ;;
            fused_soft) configs="$configs,'$C/train_soft.json'" extra=(--pseudo_label_dir "$study/pseudo_$arm") ;;
            finetuned)
                configs="$configs,'$C/finetune_mixed.json'" epochs=${FINETUNE_EPOCHS:-40}
                extra=(--pseudo_label_dir "$study/pseudo_fused" --pretrained_student "$study/f0_fused_s$seed/model.pt") ;;
            groundtruth) configs="$configs,'$C/train_groundtruth.json'" extra=() ;;
            fused_large) configs="$configs,'$C/student_basicunet.json'" extra=(--pseudo_label_dir "$study/pseudo_fused") ;;
            nnunet) extra=(--pseudo_label_dir "$study/pseudo_nnunet") ;;
            nnunet_finetuned)
                configs="$configs,'$C/finetune_mixed.json'" epochs=${FINETUNE_EPOCHS:-40}
                extra=(--pseudo_label_dir "$study/pseudo_nnunet" --pretrained_student "$study/f0_nnunet_s$seed/model.pt") ;;
            *) echo "unknown arm '$arm'; arms: labelled_only unet segresnet fused fused_conf fused_soft finetuned" \
                "groundtruth fused_large nnunet nnunet_finetuned" >&2
                exit 2 ;;
        esac
        name=f0_${arm}_s$seed
        stage "$name" "$configs" "$study/$name" "$epochs" --seed "$seed" "${extra[@]}"
    done
done
