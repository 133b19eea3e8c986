#!/usr/bin/env bash
# The bad-input table of docs/bad_inputs.md: `python -m tools.measure.bad_inputs` on each bundle of
# the collection, on phantoms made here (no data needed), with the shipped students.
#   bash tools/reproduce/bad_inputs.sh [OUT_DIR] [TABLE]
# OUT_DIR (default /tmp/bad_inputs) holds the phantoms and the runs; TABLE (default
# docs/bad_inputs.md) gets the four tables under a short header. Exits 1 if any row fails.
set -euo pipefail
out=${1:-/tmp/bad_inputs}
table=${2:-docs/bad_inputs.md}
rm -rf "$out" && mkdir -p "$out"
source "$(dirname "$0")/lib.sh"
phantoms "$out"
single_channel "$out/brats"  # the transfer bundle reads one channel, the phantoms' FLAIR alone

status=0
measure() {  # NAME DATA DATALIST IMAGE TRAINING_CONFIGS TRAINING_KEY OVERRIDES...
    local name=$1 data=$2 datalist=$3 image=$4 configs=$5 key=$6
    shift 6
    local sets=(--set epochs=1 --set num_workers=0)
    for s in "$@"; do sets+=(--set "$s"); done
    "$PYTHON" -m tools.measure.bad_inputs "bundles/$name" --dataset_dir "$data" --datalist "$datalist" \
        --inference_image "$image" --training_configs "$configs" \
        --training_key "$key" "${sets[@]}" --work "$out/work_$name" \
        --out "$out/$name.md" || status=1
}
measure kdnet_brats_mri "$out/brats" "$out/brats/dataset.json" "$out/brats/phantom_007/phantom_007_t1.nii.gz" \
    train.json,train_baseline.json training "roi_size=[32,32,32]" "pixdim=[2.0,2.0,2.0]" "val_interval=1"
measure agnostic_transfer_la_mri "$out/brats" "$out/brats/single.json" \
    "$out/brats/phantom_007/phantom_007_flair.nii.gz" train.json,train_groundtruth.json transferal "roi_size=[32,32,32]"
measure mtms_contrastive_cardiac_mri "$out/cardiac" "$out/cardiac/dataset.json" \
    "$out/cardiac/imagesTr/acdc_patient006_frame01.nii.gz" train.json,train_baseline.json training \
    "roi_size=[48,48]" "inference_roi_size=[48,48]"
measure hlfd_tumour_ct "$out/kits" "$out/kits/datalist.json" "$out/kits/case_00005/imaging.nii.gz" \
    train.json,train_baseline.json training "roi_size=[64,64]" "inference_roi_size=[64,64]" "pixdim=[1.5,1.5,-1]" \
    slices_per_volume=2

{
    echo "# Bad inputs: what each bundle does with them"
    echo
    echo "Measured by \`bash tools/reproduce/bad_inputs.sh\` (phantoms, the shipped students; the"
    echo "tests run it). A row passes when the run stopped with an error naming the file, id or"
    echo "entry, or ran to a correct result where running is right; no row may leave a damaged file."
    echo "\`python -m tools.measure.bad_inputs --help\` says how each input is made."
    for name in kdnet_brats_mri agnostic_transfer_la_mri mtms_contrastive_cardiac_mri hlfd_tumour_ct; do
        echo
        cat "$out/$name.md"
    done
} > "$table.partial" && mv "$table.partial" "$table"
exit $status
