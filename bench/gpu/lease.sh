#!/usr/bin/env bash
# Runs a plan of bench/gpu.sh steps on the GPU machine in the background, so that one machine's lease (up to 30
# minutes) serves a plan longer than the device tool's 10-minute command limit: the first call starts the plan and
# waits, each later call (made while the machine is still warm) waits again; every call copies what the plan has
# written so far into $OUT as one archive (every 30 s, so a call cut short still brings its results back).
#
#   bash bench/gpu/lease.sh start bench/gpu/plan-full.sh [WAIT_S]   # starts the plan (setsid), waits WAIT_S
#   bash bench/gpu/lease.sh wait [WAIT_S]                           # waits again (default 560 s)
#
# A plan is a bash file of `step NAME COMMAND...` lines run in order; each step's output goes to
# /tmp/vl-out/steps/NAME.log and its start, end and exit status to /tmp/vl-out/progress.txt.
set -uo pipefail
cd "$(dirname "$0")/../.."
RESULTS=/tmp/vl-out
STATE=/tmp/vl-lease

collect() {
  mkdir -p "${OUT:-/tmp/vl-collect}"
  tar -czf "${OUT:-/tmp/vl-collect}/vl-out.tar.gz" -C "$(dirname "$RESULTS")" "$(basename "$RESULTS")" 2>/dev/null
  cp "$RESULTS/progress.txt" "${OUT:-/tmp/vl-collect}/" 2>/dev/null
  cp "$RESULTS/summary.txt" "${OUT:-/tmp/vl-collect}/" 2>/dev/null
  return 0
}

wait_for_plan() {
  local limit="${1:-560}" waited=0
  while ((waited < limit)); do
    [[ -f "$STATE/done" ]] && break
    sleep 5
    waited=$((waited + 5))
    # Every 30 s, so a call stopped at its limit still brings back what was done.
    ((waited % 30 == 0)) && collect
  done
  echo "== progress after ${waited} s of this call:"
  cat "$RESULTS/progress.txt" 2>/dev/null
  local current
  current=$(tail -1 "$RESULTS/progress.txt" 2>/dev/null | awk '/^start /{print $3}')
  if [[ -n "$current" ]]; then
    echo "== tail of $current:"
    tail -15 "$RESULTS/steps/$current.log" 2>/dev/null
  fi
  [[ -f "$STATE/done" ]] && echo "== plan finished"
  collect
}

case "${1:-}" in
  start)
    plan="${2:?plan file}"
    rm -rf "$STATE" && mkdir -p "$STATE" "$RESULTS/steps"
    # setsid: the plan outlives this call and runs on while the machine is held.
    setsid bash -c '
      export OUT='"$RESULTS"'
      step() {
        local name="$1"; shift
        echo "start $(date +%T) $name" >>'"$RESULTS"'/progress.txt
        local t0=$SECONDS
        "$@" >'"$RESULTS"'/steps/"$name".log 2>&1
        local rc=$?
        echo "end   $(date +%T) $name rc=$rc $((SECONDS - t0)) s" >>'"$RESULTS"'/progress.txt
      }
      source "'"$plan"'"
      touch '"$STATE"'/done' </dev/null >"$STATE/plan.log" 2>&1 &
    wait_for_plan "${3:-560}"
    ;;
  wait)
    # A machine given back between calls comes back bare: say so at once rather than wait on nothing.
    if [[ ! -d "$STATE" ]]; then
      echo "no plan was started on this machine (the lease ended and this is a fresh one?): start it again" >&2
      exit 2
    fi
    wait_for_plan "${2:-560}"
    ;;
  *) sed -n '2,12p' "$0"; exit 64 ;;
esac
