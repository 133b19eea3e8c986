# Sourced by tools/reproduce_*.sh.

# run NAME ARGS...: python -m monai.bundle run ARGS... "${common[@]}", then prints "NAME wall N s".
run() { /usr/bin/time -f "$1 wall %e s" python -m monai.bundle run "${@:2}" "${common[@]}"; }

# acdc_setup BUNDLE DATA_DIR: sets B, C (configs), R (runs), split and common (the data arguments)
# and writes the ACDC split of the HLFD and MTMS tables, by patient (both frames of a patient in
# one list): of the 70 `training` patients 60 train and 10 validate (model selection); the
# source's 10 `validation` patients are the test set.
acdc_setup() {
    B=bundles/$1
    C=$B/configs
    R=$B/runs
    split=$R/acdc_split.json
    mkdir -p "$R"
    python tools/split_datalist.py --datalist "$2/dataset.json" --out "$split" \
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
