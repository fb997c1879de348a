#!/usr/bin/env bash
# Fuzz every loader for RUNS executions each (default 1,000,000), on both cores, then write
# the summary:  bash benchmarks/fuzz/run.sh [RUNS] [HARNESS...]   -> runs/fuzz/<harness>.log, benchmarks/results/fuzz.md
# Runs go in chunks (25,000 DICOM, 100,000 others) in fresh processes sharing one corpus, so a slow growth of the
# instrumented process never ends a run (importing the whole library under instrumentation grew it to 4 GB in
# 12,000 DICOM runs; the harness now imports only the reader under test).
set -u
cd "$(dirname "$0")/../.."
RUNS=${1:-1000000}
shift || true
HARNESSES=${*:-dicom raster itk manifest}
run() {
  h=$1; BAD=BreastCADx/Testing/Data/bad
  CHUNK=100000; [ "$h" = dicom ] || [ "$h" = dicomdir ] && CHUNK=25000
  mkdir -p runs/fuzz/$h/seeds runs/fuzz/$h/corpus
  case $h in
    dicom) cp $BAD/*.dcm BreastCADx/Resources/SampleData/*.dcm runs/fuzz/$h/seeds/ ;;
    raster) cp $BAD/*.png $BAD/*.jpg $BAD/*.tif* $BAD/*.bmp runs/fuzz/$h/seeds/ ;;
    itk) cp $BAD/*.nrrd $BAD/*.nii.gz $BAD/*.mha $BAD/*.nhdr BreastCADx/Resources/SampleData/*.nrrd runs/fuzz/$h/seeds/ ;;
    manifest) cp $BAD/*.csv runs/fuzz/$h/seeds/ ;;
    dicomdir) .venv/bin/python -c "from pathlib import Path; from benchmarks.fuzz.harness import dicomdir_export; \
import shutil; shutil.copy(dicomdir_export(Path('runs/fuzz/dicomdir/export')), 'runs/fuzz/dicomdir/seeds/DICOMDIR')" ;;
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
    got=$(grep -oE "^Done [0-9]+" runs/fuzz/$h.chunk.log | tail -1 | grep -oE "[0-9]+")
    [ -z "$got" ] && got=$(grep -oE "^#[0-9]+" runs/fuzz/$h.chunk.log | tail -1 | tr -d '#')  # stopped early
    got=${got:-0}
    cat runs/fuzz/$h.chunk.log >> runs/fuzz/$h.log
    echo "chunk: $got execs, $(( $(date +%s) - start )) s, exit $code" >> runs/fuzz/$h.log
    done_runs=$(( done_runs + got ))
    [ "$got" -eq 0 ] && break
  done
  echo "$h $done_runs" >> runs/fuzz/status.txt
}
# the slowest harness (DICOM) on one core, the others one after the other on the second
slow=""; rest=""
for h in $HARNESSES; do if [ "$h" = dicom ]; then slow=dicom; else rest="$rest $h"; fi; done
[ -n "$slow" ] && run dicom &
(for h in $rest; do run $h; done) &
wait
.venv/bin/python -m benchmarks.fuzz.summary
