#!/usr/bin/env bash
# Fuzz every loader for RUNS executions each (default 1,000,000), two harnesses at a time (2 cores), then write
# the summary:  bash benchmarks/fuzz/run.sh [RUNS]   -> runs/fuzz/<harness>.log, benchmarks/results/fuzz.md
set -u
cd "$(dirname "$0")/../.."
RUNS=${1:-1000000}
run() {
  h=$1; BAD=BreastCADx/Testing/Data/bad
  mkdir -p runs/fuzz/$h/seeds runs/fuzz/$h/corpus
  case $h in
    dicom) cp $BAD/*.dcm BreastCADx/Resources/SampleData/*.dcm runs/fuzz/$h/seeds/ ;;
    raster) cp $BAD/*.png $BAD/*.jpg $BAD/*.tif* $BAD/*.bmp runs/fuzz/$h/seeds/ ;;
    itk) cp $BAD/*.nrrd $BAD/*.nii.gz $BAD/*.mha $BAD/*.nhdr BreastCADx/Resources/SampleData/*.nrrd runs/fuzz/$h/seeds/ ;;
    manifest) cp $BAD/*.csv runs/fuzz/$h/seeds/ ;;
  esac
  find runs/fuzz/$h/seeds -size +64k -delete
  (cd runs/fuzz/$h && PYTHONPATH=$PWD/../../.. timeout 5400 ../../../.venv/bin/python -m benchmarks.fuzz.harness $h corpus seeds \
     -atheris_runs=$RUNS -max_len=8192 -rss_limit_mb=4096 -timeout=20 -print_final_stats=1 > ../$h.log 2>&1; echo "$h exit $?" >> ../status.txt)
}
run dicom & run raster & wait
run itk & run manifest & wait
.venv/bin/python -m benchmarks.fuzz.summary
