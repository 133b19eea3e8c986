# Sourced by the scripts of tools/reproduce/, which run from the repository root.
# PYTHON: the interpreter with the project installed (default: python).
# BUNDLES: the folder holding the bundles (default: bundles).
# EXTRA_ARGS: overrides appended to every bundle run, e.g. "--num_workers 0" (the tests shrink runs with it).

PYTHON=${PYTHON:-python}
read -r -a extra_args <<< "${EXTRA_ARGS:-}"
common=()
budget=()  # arguments of every stage's training and evaluation (resolution, crop, validation interval)

# bundle_setup NAME: B (the bundle), C (its configs), R (its runs folder, created).
bundle_setup() {
    B=${BUNDLES:-bundles}/$1
    C=$B/configs
    R=$B/runs
    mkdir -p "$R"
}

# run NAME ARGS...: `python -m monai.bundle run ARGS...` on bundle B with the data arguments
# (common) and EXTRA_ARGS, then prints "NAME wall N s".
run() {
    /usr/bin/time -f "$1 wall %e s" "$PYTHON" -m monai.bundle run "${@:2}" --bundle_root "$B" "${common[@]}" \
        "${extra_args[@]}"
}

# split_datalist ARGS...: python -m tools.data.split_datalist ARGS...
split_datalist() { "$PYTHON" -m tools.data.split_datalist "$@"; }

# acdc_setup BUNDLE DATA_DIR: bundle_setup, then the ACDC split of the HLFD and MTMS tables, by
# patient (both frames of a patient in one list): of the 70 `training` patients 60 train and 10
# validate (model selection); the source's 10 `validation` patients are the test set.
acdc_setup() {
    bundle_setup "$1"
    split=$R/acdc_split.json
    split_datalist --datalist "$2/dataset.json" --out "$split" \
        --val 10 --test 0 --test_from validation --group 'patient\d+' --seed 0
    common=(--dataset_dir "$2" --datalist "$split")
}

# teacher_stage CONFIGS DEFAULT_EPOCHS: trains the teacher of CONFIGS (validating every second
# epoch) for TEACHER_EPOCHS or DEFAULT_EPOCHS, then evaluates it. TRAIN_TEACHER=0 only evaluates
# the existing models/teacher/model.pt; TRAIN_TEACHER=skip does neither (e.g. a second chain of
# students running beside the first).
teacher_stage() {
    case "${TRAIN_TEACHER:-1}" in
        skip) return ;;
        0) ;;
        *) run teacher --config_file "[$1]" --epochs "${TEACHER_EPOCHS:-$2}" --val_interval 2 ;;
    esac
    run evaluate_teacher --config_file "[$1,'$C/evaluate.json']"
}

# train_stage NAME CONFIGS MODEL_DIR EPOCHS ARGS...: trains run NAME (CONFIGS, model in MODEL_DIR)
# with the budget and ARGS unless MODEL_DIR/trained exists, which it leaves when done: a study
# stopped and started again skips it, and an interrupted training resumes from its newest checkpoint.
train_stage() {
    local name=$1 configs=$2 dir=$3 epochs=$4
    shift 4
    if [ ! -e "$dir/trained" ]; then
        run "$name" --config_file "[$configs]" --epochs "$epochs" --run_name "$name" --model_dir "$dir" \
            "${budget[@]}" "$@"
        touch "$dir/trained"
    fi
}

# stage NAME CONFIGS MODEL_DIR EPOCHS ARGS...: a study's step: train_stage (MODEL_DIR's folder name
# must be NAME), then evaluation with evaluate.json unless runs/evaluate_NAME holds its per-case
# file (<metric>_raw.csv).
stage() {
    train_stage "$@"
    local name=$1 configs=$2 dir=$3
    shift 4
    if ! compgen -G "$R/evaluate_$name/*_raw.csv" > /dev/null; then  # evaluate.json names it after the model dir
        run "evaluate_$name" --config_file "[$configs,'$C/evaluate.json']" --model_dir "$dir" "${budget[@]}" "$@"
    fi
}

# ct_check OUT EPOCHS IMAGE INFERENCE_ARGS...: the HLFD bundle's CT path on one case that is the
# training, validation and test set at once (`common` holds its data and training arguments; B/C/R
# from `bundle_setup hlfd_tumour_ct`): teacher, HLFD student, evaluation, then `inference.json` on
# IMAGE alone with INFERENCE_ARGS, written under OUT/inference.
ct_check() {
    local out=$1 epochs=$2 image=$3
    shift 3
    run teacher --config_file "['$C/train.json','$C/train_teacher.json']" --epochs "$epochs" \
        --output_dir "$out/teacher" --model_dir "$out/models/teacher"
    run hlfd_student --config_file "['$C/train.json']" --epochs "$epochs" --ckpt_dir "$out/models" \
        --output_dir "$out/student"
    run evaluate --config_file "['$C/train.json','$C/evaluate.json']" --ckpt_dir "$out/models" \
        --output_dir "$out/evaluate"
    common=()  # inference reads a folder of images, not the datalist
    mkdir -p "$out/images" && ln -sf "$image" "$out/images/$(basename "$image")"
    run inference --config_file "$C/inference.json" --dataset_dir "$out/images" --image_pattern "$(basename "$image")" \
        "$@" --checkpoint_loader#load_path "$out/models/model.pt" --output_dir "$out/inference"
}

# phantoms OUT: the phantom sets of the bad-input and kill tables under OUT: brats (8 two-modality
# cases, 2 of them validation), cardiac (6 patients, 2 validation), kits (6 CT cases, 2 validation).
phantoms() {
    "$PYTHON" -m tools.data.synthetic_brats --out "$1/brats" --cases 8 --size 32 --val 2 --test 0 > /dev/null
    "$PYTHON" -m tools.data.synthetic_cardiac --out "$1/cardiac" --patients 6 --validation 2 > /dev/null
    "$PYTHON" -m tools.data.synthetic_ct --out "$1/kits" --layout kits19 --cases 6 --size 64 --slices 6 > /dev/null
    "$PYTHON" -m tools.data.tumour_ct_datalist --layout kits19 --root "$1/kits" --out "$1/kits/datalist.json" \
        --val 2 --test 0 > /dev/null
}

# single_channel FOLDER: FOLDER/single.json, the first modality of FOLDER/dataset.json's phantoms
# alone, its training cases listed as `transferal` (what the transfer bundle's baseline trains on).
single_channel() {
    "$PYTHON" - "$1" <<'PY'
import json, sys
folder = sys.argv[1]
source = json.load(open(f"{folder}/dataset.json"))
single = {k: [{"image": c["image"][0], "label": c["label"]} for c in source[k]] for k in ("training", "validation")}
single["transferal"] = single.pop("training")
json.dump(single, open(f"{folder}/single.json", "w"))
PY
}
