#!/usr/bin/env bash
# Print the README quick-start command named $1 ('demo' or 'test'): the single line between
# <!-- quickstart:NAME --> and <!-- /quickstart:NAME --> (fenced code lines excluded).
set -euo pipefail
name=$1
readme="$(dirname "$0")/../README.md"
cmd=$(sed -n "/<!-- quickstart:$name -->/,/<!-- \/quickstart:$name -->/p" "$readme" \
      | grep -v -e '^<!--' -e '^```' || true)
if [ -z "$cmd" ] || [ "$(printf '%s\n' "$cmd" | wc -l)" -ne 1 ]; then
  echo "README.md: expected exactly one command line in the quickstart:$name block" >&2
  exit 2
fi
printf '%s\n' "$cmd"
