#!/usr/bin/env bash
# The HLFD study on a real tumour task (issue "HLFD re-paired"): glioma on 2-D axial FLAIR slices
# of the BraTS subset (16 cases, whole tumour; configs/brats_flair.json: 2 mm, 96x96 training
# crops), as the stand-in for KiTS/LiTS, which are not reachable offline. K-fold cross-validation
# (default 4 folds: 4 test, 2 validation = model selection, 10 training cases each, seeded), the
# paper's pairing, the bundle's defaults: a UNet++ teacher of half the official widths
# (32-64-128-256-512, 9.1 M parameters) and the paper's decoder-less ResNet-18 FCN student.
#   bash tools/reproduce/hlfd_brats_study.sh DATA_DIR [ARMS] [SEEDS] [FOLDS]
# DATA_DIR: the BraTS subset (its dataset.json lists FLAIR first). ARMS (default: all but the sweep):
#   teacher    the fold's teacher alone (every other arm but baseline trains it first when missing)
#   baseline   the FCN student, segmentation loss only
#   logit_kd   + KL_T of the teacher's logits (train_logit_kd.json)
#   at         + attention transfer from the teacher's deepest layer (train_at.json)
#   flfd, plfd + FLFD only / PLFD only (train_flfd.json / train_plfd.json; weights and warm-up of
#              train.json, as for `at` and `logit_kd`)
#   hlfd       the bundle's HLFD (train.json): FLFD 0.3 and PLFD 0.1, distillation ramped in over 20
#              epochs (chosen on validation by the sweep below, fold 0)
#   hlfd_paper + FLFD 0.9 and PLFD 0.1 from the first step, the paper's weights (train_paper.json)
#   hlfd_f<F>_p<P>  HLFD with FLFD weight F and PLFD weight P, warm-up KD_WARMUP epochs (the sweep)
# Runs are named f<fold>_<arm>_s<seed> (teachers f<fold>_teacher) under runs/brats/, each
# evaluated on its fold's test volumes (runs/evaluate_<run>/test_mean_dice_raw.csv: whole-volume
# Dice; test_tumour_slice_dice_raw.csv: Dice on the slices holding tumour, the paper's figure).
# Each student is evaluated twice: its best-validation checkpoint (runs/evaluate_<run>) and the weights
# it ended with (runs/evaluate_f<fold>_<arm>_last_s<seed>; tools.bundle.final_weights), the figure of
# record from 0.5.4 on, since two validation cases are too few to select checkpoints on (docs:
# Protocol); `cv_study --baseline baseline_last` pairs those.
# A fold's teacher trains first, unless every arm is baseline (the student alone reads no teacher);
# one trained before (the shipped models/teacher is fold 0's) is used instead when its weights lie in
# runs/brats/f<fold>_teacher/model.pt beside an empty file `trained`.
# Each finished step leaves a marker, so the script can be stopped and started again.
# TEACHER_EPOCHS (200), STUDENT_EPOCHS (200), VAL_INTERVAL (10) and KD_WARMUP (20) set the budget.
#   python -m tools.measure.cv_study bundles/hlfd_tumour_ct/runs
set -euo pipefail
data=${1:?usage: hlfd_brats_study.sh DATA_DIR [ARMS] [SEEDS] [FOLDS]}
arms=${2:-baseline logit_kd at flfd plfd hlfd_paper hlfd}
seeds=${3:-0 1 2}
folds=${4:-0 1 2 3}
source "$(dirname "$0")/lib.sh"
bundle_setup hlfd_tumour_ct
study=$R/brats
mkdir -p "$study"
budget=(--val_interval "${VAL_INTERVAL:-10}")
profile="'$C/brats_flair.json'"

# arm_setup ARM: configs (the student's config files) and extra (the overrides) of study arm ARM.
arm_setup() {
    configs="'$C/train.json'"
    extra=(--diagnostics_interval 50)
    case $1 in
        teacher) ;;
        baseline) configs="$configs,'$C/train_baseline.json'" extra=() ;;
        logit_kd | at | flfd | plfd) configs="$configs,'$C/train_$1.json'" ;;
        hlfd) ;;
        hlfd_paper) configs="$configs,'$C/train_paper.json'" ;;
        hlfd_f*_p*)
            flfd=${1#hlfd_f} flfd=${flfd%_p*}
            extra+=(--flfd_weight "$flfd" --plfd_weight "${1#*_p}" --kd_warmup_epochs "${KD_WARMUP:-20}") ;;
        *) echo "unknown arm '$1'; arms: teacher baseline logit_kd at flfd plfd hlfd hlfd_paper hlfd_f<F>_p<P>" >&2
            exit 2 ;;
    esac
}
needs_teacher=false
for arm in $arms; do
    arm_setup "$arm"  # a misspelt arm stops the study before any training
    [ "$arm" = baseline ] || needs_teacher=true
done

# last_stage NAME LAST CONFIGS ARGS...: the weights run NAME ended with (its final checkpoint, not the
# best-validation model.pt) as model study/LAST, evaluated into runs/evaluate_LAST unless there already.
last_stage() {
    local name=$1 last=$2 configs=$3
    shift 3
    if ! compgen -G "$R/evaluate_$last/*_raw.csv" > /dev/null; then
        "$PYTHON" -m tools.bundle.final_weights "$R/$name" "$study/$last/model.pt"
        run "evaluate_$last" --config_file "[$configs,'$C/evaluate.json']" --model_dir "$study/$last" "${budget[@]}" "$@"
    fi
}

for fold in $folds; do
    split=$study/fold$fold.json
    split_datalist --datalist "$data/dataset.json" --out "$split" --image_file 0 \
        --folds 4 --fold "$fold" --val 2 --seed 0
    common=(--dataset_dir "$data" --datalist "$split")
    teacher=$study/f${fold}_teacher
    if $needs_teacher; then  # the student without KD does not read it: baselines can run before their teacher
        stage "f${fold}_teacher" "'$C/train.json','$C/train_teacher.json',$profile" "$teacher" \
            "${TEACHER_EPOCHS:-200}"
    fi
    for seed in $seeds; do
        for arm in $arms; do
            [ "$arm" = teacher ] && continue
            arm_setup "$arm"
            name=f${fold}_${arm}_s$seed
            run_args=(--seed "$seed" --teacher#checkpoint "$teacher/model.pt" "${extra[@]}")
            stage "$name" "$configs,$profile" "$study/$name" "${STUDENT_EPOCHS:-200}" "${run_args[@]}"
            last_stage "$name" "f${fold}_${arm}_last_s$seed" "$configs,$profile" "${run_args[@]}"
        done
    done
done
