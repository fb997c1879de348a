#!/usr/bin/env bash
# Fuzz every loader for RUNS executions each (default 1,000,000), two harnesses at a time (2 cores), then write
# the summary:  bash benchmarks/fuzz/run.sh [RUNS] [HARNESS...]   -> runs/fuzz/<harness>.log, benchmarks/results/fuzz.md
# Runs go in chunks (8,000 DICOM, 25,000 others) in fresh processes sharing one corpus: under instrumentation the
# fuzzing process itself grows (~4 GB after 12,000-40,000 DICOM runs; the reader alone stays at 150 MB over the
# same inputs).
set -u
cd "$(dirname "$0")/../.."
RUNS=${1:-1000000}
shift || true
HARNESSES=${*:-dicom raster itk manifest}
run() {
  h=$1; BAD=BreastCADx/Testing/Data/bad
  CHUNK=25000; [ "$h" = dicom ] && CHUNK=8000  # the DICOM process grows fastest
  mkdir -p runs/fuzz/$h/seeds runs/fuzz/$h/corpus
  case $h in
    dicom) cp $BAD/*.dcm BreastCADx/Resources/SampleData/*.dcm runs/fuzz/$h/seeds/ ;;
    raster) cp $BAD/*.png $BAD/*.jpg $BAD/*.tif* $BAD/*.bmp runs/fuzz/$h/seeds/ ;;
    itk) cp $BAD/*.nrrd $BAD/*.nii.gz $BAD/*.mha $BAD/*.nhdr BreastCADx/Resources/SampleData/*.nrrd runs/fuzz/$h/seeds/ ;;
    manifest) cp $BAD/*.csv runs/fuzz/$h/seeds/ ;;
  esac
  find runs/fuzz/$h/seeds -size +64k -delete
  done_runs=0
  while [ "$done_runs" -lt "$RUNS" ]; do
    n=$(( RUNS - done_runs < CHUNK ? RUNS - done_runs : CHUNK ))
    start=$(date +%s)
    (cd runs/fuzz/$h && PYTHONPATH=$PWD/../../.. timeout 3600 ../../../.venv/bin/python -m benchmarks.fuzz.harness $h \
       corpus seeds -atheris_runs=$n -max_len=8192 -rss_limit_mb=4096 -timeout=20 -print_final_stats=1 \
       > ../$h.chunk.log 2>&1)
    code=$?
    got=$(grep -oE "^#[0-9]+" runs/fuzz/$h.chunk.log | tail -1 | tr -d '#')
    got=${got:-0}
    cat runs/fuzz/$h.chunk.log >> runs/fuzz/$h.log
    echo "chunk: $got execs, $(( $(date +%s) - start )) s, exit $code" >> runs/fuzz/$h.log
    done_runs=$(( done_runs + got ))
    [ "$got" -eq 0 ] && break
  done
  echo "$h $done_runs" >> runs/fuzz/status.txt
}
set -- $HARNESSES
while [ $# -gt 0 ]; do
  run $1 & [ $# -gt 1 ] && { run $2 & }
  wait; shift; [ $# -gt 0 ] && shift
done
.venv/bin/python -m benchmarks.fuzz.summary
