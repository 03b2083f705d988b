#!/usr/bin/env bash
# A CI gate: train, then fail the job when the model is below a bar.
#
#   bash examples/ci_pipeline.sh [MIN_ACCURACY]      (EPOCHS=N to shorten the preset's 30 epochs)
#
# stdout carries data only, so command substitution and JSON parsing are safe;
# progress lines go to stderr. Exit codes: 2 config error, 3 missing data or
# artifact, 4 threshold not met.
set -euo pipefail
min="${1:-0.95}"

ref="$(mltk train supervised ${EPOCHS:+train.epochs="$EPOCHS"} name=ci-digits --format quiet)"
echo "trained $ref" >&2

mltk eval "$ref" --protocol accuracy --format json > eval.json
python3 - <<'PY'
import json
report = json.load(open("eval.json"))
print(f"{report['ref']}: accuracy {report['metrics']['accuracy']:.4f}")
PY

mltk verify "$ref" --format quiet > /dev/null
mltk eval "$ref" --min "$min" --format quiet   # exits 4 below the bar, failing the job
