#!/bin/sh
# The full benchmark as documented in docs/benchmarks.md (about an hour on 2 cores).
# Usage: bench/run_full.sh [OUT_DIR] [STEP...]   (steps: profile throughput workers
#        variants policy cold protocols scale report; default all)
OUT=${1:-bench/results}
shift 2>/dev/null
STEPS=${*:-"profile throughput workers variants policy cold protocols scale report"}
set -x
for step in $STEPS; do
  case $step in
    profile)
      python -m bench profile --out "$OUT" --jobs 2000 --duration 20
      python -m bench profile --out "$OUT" --jobs 2000 --duration 20 --gil --name profile-gil ;;
    throughput)
      python -m bench throughput --out "$OUT" --run-time 0.5 --jobs 1500 --tutorial-jobs 32 --async-pools 16,32,64 --name throughput-0.5s
      python -m bench throughput --out "$OUT" --run-time 5 --jobs 5000 --tutorial-jobs 160 --name throughput-5s
      python -m bench throughput --out "$OUT" --run-time 5 --jobs 2000 --tutorial-jobs 96 --hint-ms 1000 --name throughput-5s-hint1000 ;;
    workers)
      python -m bench workers --out "$OUT" --counts 1,2,4 --jobs 3000 --name workers ;;
    variants)
      python -m bench variants --out "$OUT" --jobs 2000 --name variants \
        --variants ";noevents;nocount;admit;noevents,nocount,admit" ;;
    policy)
      python -m bench policy --out "$OUT" --workloads 2,5,30,mixed --jobs 200 --rate 20 --name policy ;;
    cold)
      python -m bench cold --out "$OUT" --run-time 2.5 --jobs 160 --hint-ms 1000 --name cold ;;
    protocols)
      python -m bench protocols --out "$OUT" --workload 5 --jobs 100 --name protocols
      python -m bench protocols --out "$OUT" --workload 5 --jobs 100 --hint-ms 1000 --name protocols-hint1000 ;;
    scale)
      python -m bench scale --out "$OUT" --jobs 10000 --run-time 30 --timeout 600 --name scale-10000 ;;
    report)
      python -m bench report --out "$OUT" ;;
  esac
done
