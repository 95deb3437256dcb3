#!/usr/bin/env bash
# Start scripts/check_extras.py in the background and return at once: WORK/check_extras.log as it runs, then
# WORK/rc (its exit status) when it ends; tests/install/test_extras_install.py waits for rc.
#   bash scripts/extras_job.sh WORK PYTHON
set -u
work=$1
python=$2
cd "$(dirname "$0")/.."
( "$python" scripts/check_extras.py --work "$work" > "$work/check_extras.log" 2>&1 < /dev/null
  echo $? > "$work/rc.tmp" && mv "$work/rc.tmp" "$work/rc" ) &
