#!/usr/bin/env bash
# Train on every worker of an existing Cloud TPU VM pod slice (one process per worker, through
# jax.distributed, which reads the pod from the TPU environment).
#
#   launch/tpu_pod.sh TPU_NAME ZONE BUCKET CONFIG RUN_NAME [--config.FIELD=VALUE ...]
#   e.g. launch/tpu_pod.sh my-v4-32 us-central2-b gs://my-bucket configs/cub_bcnn.py cub_bcnn \
#          --config.model.backbone_a_pretrained=/home/$USER/bucket/weights/vgg16 ...
#
# What it does, on all workers: copies this checkout to ~/fgjax, creates ~/fgjax/.venv with fgjax and
# the TPU build of jax, mounts BUCKET at ~/bucket with gcsfuse (so TFDS_DATA_DIR, the workdir and
# the weights are one shared path for every process), then runs
#   TFDS_DATA_DIR=~/bucket/tensorflow_datasets python -m fgjax.train --config=CONFIG \
#     --workdir=~/bucket/runs/RUN_NAME --distributed=on ...
# Prepare the dataset into ~/bucket/tensorflow_datasets once beforehand (or let process 0 build it:
# the other processes wait). Rerun the same command after a preemption: it resumes.
# Needs: gcloud, an existing TPU VM slice, gcsfuse on the workers (TPU VM images ship it; otherwise
# install it from Google's apt repository).
set -euo pipefail
if [ $# -lt 5 ]; then
  sed -n '2,19p' "$0" >&2
  exit 2
fi
tpu=$1; zone=$2; bucket=${3#gs://}; config=$4; run=$5; shift 5
extra=$(printf ' %q' "$@")
root=$(cd "$(dirname "$0")/.." && pwd)

gcloud compute tpus tpu-vm scp --zone "$zone" --worker=all --recurse "$root" "$tpu:~/fgjax"
gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all --command="
  set -e; cd ~/fgjax
  [ -d .venv ] || python3 -m venv .venv
  . .venv/bin/activate
  pip install -q -e .
  # the TPU build of the jax version pyproject.toml pins for this Python (0.10 / 0.12)
  pip install -q \"jax[tpu]==\$(python -c 'import jax; print(jax.__version__)')\" \
    -f https://storage.googleapis.com/jax-releases/libtpu_releases.html
  mkdir -p ~/bucket && (mountpoint -q ~/bucket || gcsfuse --implicit-dirs '$bucket' ~/bucket)"
gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all --command="
  cd ~/fgjax && . .venv/bin/activate &&
  TFDS_DATA_DIR=\$HOME/bucket/tensorflow_datasets python -m fgjax.train --config=$config \
    --workdir=\$HOME/bucket/runs/$run --distributed=on$extra"
