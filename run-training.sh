#!/usr/bin/env bash
# Train on a catalog once: detection -> thumbnails -> saliency/edge views -> training -> catalog index.
#   ./run-training.sh [RECORDS.jsonl] [OUT_DIR]
# Settings come from the environment: DETECTOR (objectness), DETECTION_IMAGES (set: draw the boxes),
# IM_HEIGHT, IM_WIDTH, IM_CHANNEL (128, 128, 3), EDGES (hed; canny is fast), VIEWS (train.py --help has the
# defaults; the saliency stage runs when VIEWS names saliency, edges or foreground), PROFILE (auto: where
# TensorFlow sees a GPU the defaults also train the student view; cpu trains nothing), EPOCHS (train.py's:
# 20 a trained view on the cpu profile, 100 ended by the time budget on gpu), TIME_BUDGET (seconds a
# trained view; 600 on gpu), OBJECTIVE, FUSION_ARGS (extra fusion.py flags), PYTHON (default: the repo's
# .venv if there is one and no virtualenv or conda environment
# other than base is active, else python3).
# Every stage's records are kept in OUT_DIR, so a failed record can be traced.
set -euo pipefail
records=${1:-local_test_data/catalog.jsonl}
out=${2:-out}
base=$(dirname "$records")
here=$(cd "$(dirname "$0")" && pwd)
# the environment `make demo` made, unless PYTHON names another or a virtualenv or conda env (not base) is active
if [[ -z "${PYTHON:-}${VIRTUAL_ENV:-}" && "${CONDA_DEFAULT_ENV:-base}" == base && -x "$here/.venv/bin/python" ]]; then
    PYTHON=$here/.venv/bin/python
fi
py=${PYTHON:-python3}
size=(--im_height "${IM_HEIGHT:-128}" --im_width "${IM_WIDTH:-128}" --im_channel "${IM_CHANNEL:-3}")
mkdir -p "$out"

echo "== object detection" >&2
"$py" "$here/object_detection.py" --base_image_path "$base" --detector "${DETECTOR:-objectness}" \
    ${DETECTION_IMAGES:+--output_image_path "$out/detections"} < "$records" > "$out/detections.jsonl"

echo "== thumbnails" >&2
"$py" "$here/thumbnail.py" --base_image_path "$base" --output_image_path "$out/views/thumbnail" "${size[@]}" \
    < "$out/detections.jsonl" > "$out/thumbnails.jsonl"

# the default views (train.py --help) are all computed from the thumbnail: the saliency stage runs
# only when VIEWS asks for one of its views
if [[ ",${VIEWS:-}," =~ ,(saliency|edges|foreground), ]]; then
    echo "== saliency, edge and foreground views" >&2
    "$py" "$here/saliency.py" --base_image_path "$out/views/thumbnail" --output_image_path "$out/views" \
        ${EDGES:+--edges "$EDGES"} < "$out/thumbnails.jsonl" > "$out/views.jsonl"
else
    cp "$out/thumbnails.jsonl" "$out/views.jsonl"
fi

echo "== training" >&2
"$py" "$here/train.py" --base_image_path_for_model "$out/views" --model_save_path "$out/model" "${size[@]}" \
    ${EPOCHS:+--epochs "$EPOCHS"} ${TIME_BUDGET:+--time_budget "$TIME_BUDGET"} \
    ${PROFILE:+--profile "$PROFILE"} ${VIEWS:+--views "$VIEWS"} ${OBJECTIVE:+--objective "$OBJECTIVE"} \
    < "$out/views.jsonl" > "$out/trained.jsonl"

echo "== index" >&2
# shellcheck disable=SC2086  # FUSION_ARGS is a list of flags
"$py" "$here/fusion.py" --model_save_path "$out/model" ${FUSION_ARGS:-} > "$out/index.json"
