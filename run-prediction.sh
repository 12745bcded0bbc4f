#!/usr/bin/env bash
# Query a catalog trained by run-training.sh: the most similar catalog items to one image.
#   ./run-prediction.sh QUERY_IMAGE [OUT_DIR]
# Uses the model in OUT_DIR/model; writes OUT_DIR/prediction.jsonl and OUT_DIR/recommendations.png
# and prints the results JSON on stdout. TOP_K (default 10) and PREDICT_ARGS (extra predict.py
# flags, e.g. "--same_category") come from the environment; PYTHON (default: the repo's .venv if there is
# one and no virtualenv or conda environment
# other than base is active, else python3).
set -euo pipefail
if [ $# -lt 1 ]; then
    echo "usage: $0 QUERY_IMAGE [OUT_DIR]" >&2
    exit 2
fi
query=$1
out=${2:-out}
here=$(cd "$(dirname "$0")" && pwd)
# the environment `make demo` made, unless PYTHON names another or a virtualenv or conda env (not base) is active
if [[ -z "${PYTHON:-}${VIRTUAL_ENV:-}" && "${CONDA_DEFAULT_ENV:-base}" == base && -x "$here/.venv/bin/python" ]]; then
    PYTHON=$here/.venv/bin/python
fi
py=${PYTHON:-python3}
mkdir -p "$out"
# shellcheck disable=SC2086  # PREDICT_ARGS is a list of flags
"$py" "$here/predict.py" --model_save_path "$out/model" --output_image_path "$out" \
    --top_k "${TOP_K:-10}" ${PREDICT_ARGS:-} "$query" > "$out/prediction.jsonl" || status=$?
cat "$out/prediction.jsonl"
exit "${status:-0}"
