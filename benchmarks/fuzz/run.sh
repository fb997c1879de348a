#!/usr/bin/env bash
# Fuzz every loader for RUNS executions each (default 1,000,000), one after the other, then write the summary:
#   bash benchmarks/fuzz/run.sh [RUNS]     -> runs/fuzz/<harness>.log, benchmarks/results/fuzz.md
set -u
cd "$(dirname "$0")/../.."
RUNS=${1:-1000000}
BAD=BreastCADx/Testing/Data/bad
for h in dicom raster itk manifest; do
  mkdir -p runs/fuzz/$h/seeds runs/fuzz/$h/corpus
  case $h in
    dicom) cp $BAD/*.dcm BreastCADx/Resources/SampleData/*.dcm runs/fuzz/$h/seeds/ ;;
    raster) cp $BAD/*.png $BAD/*.jpg $BAD/*.tif* $BAD/*.bmp runs/fuzz/$h/seeds/ ;;
    itk) cp $BAD/*.nrrd $BAD/*.nii.gz $BAD/*.mha $BAD/*.nhdr BreastCADx/Resources/SampleData/*.nrrd runs/fuzz/$h/seeds/ ;;
    manifest) cp $BAD/*.csv runs/fuzz/$h/seeds/ ;;
  esac
  find runs/fuzz/$h/seeds -size +64k -delete  # libFuzzer mutates small inputs best
  (cd runs/fuzz/$h && timeout 7200 ../../../.venv/bin/python -m benchmarks.fuzz.harness $h corpus seeds \
     -atheris_runs=$RUNS -max_len=8192 -rss_limit_mb=4096 -print_final_stats=1 > ../$h.log 2>&1)
  echo "$h exit $?" >> runs/fuzz/status.txt
done
.venv/bin/python -m benchmarks.fuzz.summary
