#!/usr/bin/env bash
# Regenerate docs/images/overlay_<method>.png: the attention overlays of `python -m fgjax.predict`
# for the synthetic demo runs (docs/predict.md).
#
#   docs/make_overlay_figures.sh                 # trains every configs/synthetic_<method>.py first
#   WORKDIR_bcnn=/tmp/fgjax_demo docs/make_overlay_figures.sh   # reuse a finished run
#
# For each method: train configs/synthetic_<method>.py into $RUNS/<method> unless
# WORKDIR_<method> names a finished run (a run with metrics.json is not retrained), export the
# first $NUM_IMAGES test-split images of the embedded dataset to PNG, predict them with
# --overlays, and copy the overlay of test image $SHOW to docs/images/overlay_<method>.png.
# Training all five on 2 CPU cores takes long (bilinear_lstm and a3m: tens of minutes each).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
RUNS=${RUNS:-/tmp/fgjax_overlay_runs}
NUM_IMAGES=${NUM_IMAGES:-4}
SHOW=${SHOW:-0}
METHODS=${METHODS:-"bcnn bilinear_lstm a3m activation_attention focus_discriminate"}
mkdir -p "$RUNS" docs/images

for m in $METHODS; do
  var="WORKDIR_$m"
  wd=${!var:-$RUNS/$m}
  if [ ! -f "$wd/metrics.json" ]; then
    nice -n 5 "$PY" -m fgjax.train --config="configs/synthetic_$m.py" --workdir="$wd"
  fi
  imgs="$RUNS/images_$m"
  # The test split of the run's own dataset config, written losslessly.
  "$PY" - "$wd" "$imgs" "$NUM_IMAGES" <<'EOF'
import os, sys
from PIL import Image
from fgjax import run
from fgjax.data import datasets
config = run.load_config(sys.argv[1])
builder, _ = datasets.prepare(config.dataset, log=lambda m: None)
source = datasets.data_source(builder, 'test')
os.makedirs(sys.argv[2], exist_ok=True)
for i in range(int(sys.argv[3])):
  Image.fromarray(source[i]['image']).save(os.path.join(sys.argv[2], f'test_{i:03d}.png'))
EOF
  rm -rf "$RUNS/overlays_$m"
  nice -n 5 "$PY" -m fgjax.predict --workdir="$wd" --topk=3 --overlays="$RUNS/overlays_$m" \
    "$imgs" > "$RUNS/predictions_$m.jsonl"
  name=$(basename "$imgs")
  cp "$RUNS/overlays_$m/${name}__test_$(printf %03d "$SHOW").png.png" "docs/images/overlay_$m.png"
  echo "docs/images/overlay_$m.png <- $wd ($(head -c 200 "$RUNS/predictions_$m.jsonl" | head -1))"
done
