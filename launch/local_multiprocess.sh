#!/usr/bin/env bash
# Run one fgjax command as N cooperating processes on this machine (CPU), through jax.distributed:
# for testing and debugging multi-host behaviour without a cluster.
#
#   launch/local_multiprocess.sh N DEVICES_PER_PROCESS python -m fgjax.train --config=... --workdir=...
#
# Each process gets --distributed=on --coordinator_address=127.0.0.1:PORT --num_processes=N
# --process_id=i --local_device_count=DEVICES_PER_PROCESS. Output lines are prefixed with [i]; the
# script exits with the first non-zero exit status (all processes are waited for). SIGTERM / SIGINT
# to the script are forwarded to every process.
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: $0 NUM_PROCESSES DEVICES_PER_PROCESS COMMAND..." >&2
  exit 2
fi
n=$1; devices=$2; shift 2
port=${FGJAX_COORDINATOR_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
pids=()
for ((i = 0; i < n; i++)); do
  "$@" --distributed=on --coordinator_address="127.0.0.1:$port" --num_processes="$n" \
       --process_id="$i" --local_device_count="$devices" > >(sed -u "s/^/[$i] /") 2>&1 &
  pids+=($!)
done
# SIGTERM / SIGINT to this script (e.g. a preemption) goes to every process: they agree on a step,
# write one checkpoint and exit 0.
forward() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; }
trap forward TERM INT
status=0
for pid in "${pids[@]}"; do
  while true; do
    rc=0
    wait "$pid" || rc=$?
    kill -0 "$pid" 2>/dev/null || break  # still running: wait was interrupted by a signal
  done
  [ "$status" -eq 0 ] && status=$rc
done
wait  # the output filters
exit "$status"
