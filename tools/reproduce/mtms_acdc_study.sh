#!/usr/bin/env bash
# The MTMS study of bundles/mtms_contrastive_cardiac_mri/docs/README.md (docs/protocol.md) on ACDC:
# the split of mtms_acdc.sh (60 training patients, 10 validation patients for model selection, the
# source's 10 `validation` patients as the test set), the multi-task teacher on all 60, then every
# arm and seed given, each evaluated on the test volumes (runs/evaluate_<run>/val_mean_dice_raw.csv).
#   bash tools/reproduce/mtms_acdc_study.sh DATA_DIR [ARMS] [SEEDS]
# ARMS (default: every arm below but the sweep). Students see the labels of the seeded half of the
# patients (the same 30 in every arm); "_u" arms also distil on the other 30, without their labels:
#   baseline, baseline_long  no KD, STUDENT_EPOCHS and twice as many (as many steps as a "_u" arm)
#   baseline_all             no KD, the labels of every patient, as many steps as a "_u" arm: how far
#                            labels alone take the student, the most a teacher's maps can stand in for
#   pmd, pmd_u               prediction-map distillation only (train_pmd.json)
#   paper, paper_u           + instance InfoNCE at three scales, the paper's code (train_paper.json)
#   dense, dense_u           + dense (patch-level) InfoNCE through pooled heads (train_dense.json)
#   feature_mse, feature_mse_u  + standardised-feature MSE through the same heads (train_feature_mse.json)
#   pmd_long, paper_long, dense_long, feature_mse_long  a labelled-only KD arm for as many steps as a "_u" arm
#                            (baseline_long's budget): labelled-only against unlabelled-image KD at equal steps
#   dense_w<W>, dense_w<W>_u dense / dense_u with weight W at every scale (the sweep, on validation)
# An arm but baseline_all with "_q" appended (baseline_long_q, pmd_u_q, ...) is the quarter-label setting: the labels
# of a seeded quarter of the patients (15; drawn as the half is), baseline_long four times as long.
# Runs are named f0_<arm>_s<seed> (one fold: tools.measure.cv_study tabulates them) and go under
# runs/study/; each finished step leaves a marker, so the script can be stopped and started
# again. STUDENT_EPOCHS (60), TEACHER_EPOCHS (60: as many steps as the students; the 0.4.0 tables
# were measured at 30) and VAL_INTERVAL (5 epochs) set the budget; every
# KD arm logs each loss term's gradient share every DIAGNOSTICS_INTERVAL (50) iterations.
#   python -m tools.measure.cv_study bundles/mtms_contrastive_cardiac_mri/runs --group 'patient\d+'  (a patient's two frames: one unit)
set -euo pipefail
data=${1:?usage: mtms_acdc_study.sh DATA_DIR [ARMS] [SEEDS]}
arms=${2:-baseline baseline_long pmd paper dense feature_mse pmd_u paper_u dense_u feature_mse_u}
seeds=${3:-0 1 2}
source "$(dirname "$0")/lib.sh"
budget=(--val_interval "${VAL_INTERVAL:-5}")
epochs=${STUDENT_EPOCHS:-60}

# arm_setup ARM: configs (the student's config files), extra (its overrides), labels (its labelled
# share) and budget_epochs of study arm ARM; an unknown arm exits 2.
arm_setup() {
    local arm=$1 method=${1%_q} parts=2  # the students' labelled share of the patients: 1/parts
    configs="'$C/train.json'"
    extra=(--diagnostics_interval "${DIAGNOSTICS_INTERVAL:-50}")
    budget_epochs=$epochs labels=()
    if [ "$method" != "$arm" ]; then
        parts=4
        case $method in
            baseline_all) echo "arm '$arm': baseline_all trains with every label, so '_q' (a quarter) does not apply" >&2
                exit 2 ;;
            *_u) labels=(--label_fraction 0.25) ;;
            *) labels=(--data_fraction 0.25) ;;
        esac
    fi
    case $method in
        baseline) configs="$configs,'$C/train_baseline.json'" extra=() ;;
        baseline_all)
            configs="$configs,'$C/train_baseline.json'" extra=() labels=(--data_fraction 1.0) ;;
        baseline_long)  # as many steps as a "_u" arm: an epoch of the labelled patients is 1/parts of theirs
            configs="$configs,'$C/train_baseline.json'" extra=() budget_epochs=$((parts * epochs)) ;;
        pmd | pmd_u | paper | paper_u | dense | dense_u | feature_mse | feature_mse_u)
            configs="$configs,'$C/train_${method%_u}.json'" ;;
        pmd_long | paper_long | dense_long | feature_mse_long)
            configs="$configs,'$C/train_${method%_long}.json'" budget_epochs=$((parts * epochs)) ;;
        dense_w*)
            weight=${method#dense_w} weight=${weight%_u}
            if [[ ! $weight =~ ^[0-9]*\.?[0-9]+$ ]]; then
                echo "arm '$arm': the dense weight '$weight' is not a number (dense_w0.1, dense_w0.1_u)" >&2
                exit 2
            fi
            configs="$configs,'$C/train_dense.json'"
            extra+=(--scale_weights "{'encoder': $weight, 'bottleneck': $weight, 'decoder': $weight}") ;;
        *) echo "unknown arm '$arm'; arms: baseline baseline_long baseline_all pmd paper dense feature_mse, each KD arm" \
            "with _u (KD on the unlabelled half too) or _long (labelled only, baseline_long's steps), dense_w<W> and" \
            "dense_w<W>_u (the sweep); any but baseline_all with _q (a quarter labelled)" >&2
            exit 2 ;;
    esac
    case $method in *_u) configs="$configs,'$C/train_unlabelled_kd.json'" ;; esac
}
bundle_setup mtms_contrastive_cardiac_mri
for arm in $arms; do arm_setup "$arm"; done  # a misspelt arm stops the study before any split or training

acdc_setup mtms_contrastive_cardiac_mri "$data"
study=$R/study
mkdir -p "$study"
teacher=$study/f0_teacher
stage f0_teacher "'$C/train.json','$C/train_teacher.json'" "$teacher" "${TEACHER_EPOCHS:-60}"
for seed in $seeds; do
    for arm in $arms; do
        arm_setup "$arm"
        name=f0_${arm}_s$seed
        stage "$name" "$configs" "$study/$name" "$budget_epochs" --seed "$seed" --teacher#checkpoint "$teacher/model.pt" \
            "${extra[@]}" "${labels[@]}"
    done
done
