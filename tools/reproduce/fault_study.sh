#!/usr/bin/env bash
# The kill tests of docs/fault_tolerance.md: `python -m tools.measure.fault_injection` kills (SIGKILL)
# each bundle's distillation training, the transfer bundle's annotation and training, and an export,
# at seeded random moments, then lets each run to its end; on phantoms made here, with the shipped
# teachers, in scratch copies of the bundles (nothing is written into bundles/).
#   bash tools/reproduce/fault_study.sh [OUT_DIR] [REPORT] [KILLS] [JOBS]
# OUT_DIR (default /tmp/fault_study) holds the phantoms, bundle copies and runs; REPORT (default
# docs/fault_tolerance.md) gets the tables; KILLS (default 5) is the kills per training job (the
# annotation and the export get 3 each); JOBS (default "kdnet mtms hlfd annotation transfer
# export") picks jobs, each with its own seed (transfer trains on the labels annotation writes, so
# it needs annotation in the same run). Exits 1 if anything was lost.
set -euo pipefail
out=${1:-/tmp/fault_study}
report=${2:-docs/fault_tolerance.md}
kills=${3:-5}
jobs=" ${4:-kdnet mtms hlfd annotation transfer export} "
rm -rf "$out" && mkdir -p "$out/bundles" "$out/tables"
for name in kdnet_brats_mri agnostic_transfer_la_mri mtms_contrastive_cardiac_mri hlfd_tumour_ct; do
    cp -r "bundles/$name" "$out/bundles/" && rm -rf "$out/bundles/$name/runs"
done
source "$(dirname "$0")/lib.sh"
phantoms "$out"
# the transfer bundle: 18 single-channel images to annotate (long enough to be killed halfway), 2 to validate
"$PYTHON" -m tools.data.synthetic_brats --out "$out/la" --cases 20 --size 32 --val 2 --test 0 --seed 1 > /dev/null
single_channel "$out/la"

status=0
# wants NAME: whether JOBS holds it
wants() { [[ $jobs == *" $1 "* ]]; }
# inject SEED JOB TITLE WINDOW_MIN WINDOW_MAX JOB_ARGS... -- COMMAND...: one fault_injection run, its table kept
inject() {
    local seed=$1 job=$2 title=$3 low=$4 high=$5
    shift 5
    local count=$kills
    [ "$job" = training ] || count=3
    echo "## $title" > "$out/tables/$seed.md"
    echo >> "$out/tables/$seed.md"
    "$PYTHON" -m tools.measure.fault_injection --kills "$count" --seed "$seed" --window "$low" "$high" "$@" \
        >> "$out/tables/$seed.md" || status=1
    tail -1 "$out/tables/$seed.md"
}
# bundle_run NAME CONFIGS EPOCHS ARGS...: the `python -m monai.bundle run` command line, in `cmd`
bundle_run() {
    local b=$out/bundles/$1 configs=$2
    shift 2
    cmd=("$PYTHON" -m monai.bundle run --config_file "$configs" --bundle_root "$b" --num_workers 0 "$@")
}
c() { echo "$out/bundles/$1/configs/$2"; }

if wants kdnet; then
bundle_run kdnet_brats_mri "$(c kdnet_brats_mri train.json)" --dataset_dir "$out/brats" --epochs 40 \
    --roi_size "[32,32,32]" --pixdim "[2.0,2.0,2.0]" --val_interval 5
inject 1 training "KD-Net: distillation training (40 epochs)" 10 45 \
    --checkpoints "$out/bundles/kdnet_brats_mri/runs/kd_student" --epochs 40 -- "${cmd[@]}"
fi

if wants mtms; then
bundle_run mtms_contrastive_cardiac_mri "$(c mtms_contrastive_cardiac_mri train.json)" --dataset_dir "$out/cardiac" \
    --datalist "$out/cardiac/dataset.json" --epochs 30 --roi_size "[48,48]" --inference_roi_size "[48,48]" \
    --val_interval 5
inject 2 training "MTMS: contrastive distillation training (30 epochs)" 10 45 \
    --checkpoints "$out/bundles/mtms_contrastive_cardiac_mri/runs/mtms_student" --epochs 30 -- "${cmd[@]}"
fi

if wants hlfd; then
bundle_run hlfd_tumour_ct "$(c hlfd_tumour_ct train.json)" --dataset_dir "$out/kits" --epochs 30 \
    --roi_size "[64,64]" --inference_roi_size "[64,64]" --pixdim "[1.5,1.5,-1]" --slices_per_volume 2 --val_interval 5
inject 3 training "HLFD: distillation training (30 epochs)" 10 45 \
    --checkpoints "$out/bundles/hlfd_tumour_ct/runs/hlfd_student" --epochs 30 -- "${cmd[@]}"
fi

labels=$out/pseudo_labels
transfer=(--dataset_dir "$out/la" --datalist "$out/la/single.json" --pseudo_label_dir "$labels"
    --teacher_nets#unet#roi_size "[32,32,32]" --teacher_nets#segresnet#roi_size "[32,32,32]")
if wants annotation; then
bundle_run agnostic_transfer_la_mri "['$(c agnostic_transfer_la_mri train.json)','$(c agnostic_transfer_la_mri annotate.json)']" \
    "${transfer[@]}"
inject 4 annotation "Transfer: annotation by the two teachers (18 images)" 15 35 --annotation "$labels" -- "${cmd[@]}"
fi

if wants transfer; then
bundle_run agnostic_transfer_la_mri "$(c agnostic_transfer_la_mri train.json)" "${transfer[@]}" --epochs 15 \
    --roi_size "[32,32,32]" --val_interval 5
inject 5 training "Transfer: the student's training on the pseudo labels (15 epochs)" 10 45 \
    --checkpoints "$out/bundles/agnostic_transfer_la_mri/runs/student" --epochs 15 -- "${cmd[@]}"
fi

if wants export; then
version=$("$PYTHON" -c "import json, sys; print(json.load(open(sys.argv[1]))['version'])" "$(c hlfd_tumour_ct metadata.json)")
inject 6 export "Export of the HLFD bundle (a 59 MB zip)" 2 7 --export "$out/dist/hlfd_tumour_ct_v$version.zip" \
    -- "$PYTHON" -m tools.bundle.export export "$out/bundles/hlfd_tumour_ct" --out "$out/dist"
fi

{
    echo "# Fault tolerance: killed runs, measured"
    echo
    echo "Measured by \`bash tools/reproduce/fault_study.sh\` ($(date -u +%Y-%m-%d), phantoms, the shipped"
    echo "teachers): each job is killed with SIGKILL at seeded random moments (\`--window\` seconds after"
    echo "its start), started again after every kill, and finally run to its end. Training must resume"
    echo "from the newest complete checkpoint and end at its last epoch; annotation must keep every"
    echo "finished case and skip exactly those; an export must never leave a partial zip under its"
    echo "final name. \"Damaged files\" are files under their final names that do not load."
    echo
    total=$(cat "$out"/tables/*.md | grep -o "^[0-9]* kill(s)" | awk '{n += $1} END {print n}')
    lost=$(cat "$out"/tables/*.md | grep -c "kill(s) in .*LOST" || true)
    echo "**$total kills in all; jobs that lost something: $lost.**"
    for table in $(ls "$out/tables" | sort -n); do
        echo
        cat "$out/tables/$table"
    done
} > "$report.partial" && mv "$report.partial" "$report"
exit $status
