#!/usr/bin/env bash
# README command 2: the test suite, after making sure the Debian tools the tests use are there.
# dciodvfy (dicom3tools) validates the DICOM we write; Orthanc + its DICOMweb plugin is the PACS on loopback;
# Chromium + its driver run the web page's end-to-end tests (headless, no GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v dciodvfy >/dev/null || need+=(dicom3tools)
command -v dcmdump >/dev/null || need+=(dcmtk)
[ -x /usr/sbin/Orthanc ] || need+=(orthanc)
ls /usr/share/orthanc/plugins/libOrthancDicomWeb* >/dev/null 2>&1 || need+=(orthanc-dicomweb)
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing Debian test tools: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    (service orthanc stop || true) >/dev/null 2>&1  # the tests start their own Orthanc on a loopback port
  else
    echo "the tests need these Debian packages: ${need[*]}; run as root: apt-get install ${need[*]}" >&2
    exit 1
  fi
fi
[ -x .venv/bin/python ] || { echo "no .venv: run README command 1 first" >&2; exit 1; }
exec .venv/bin/python -m pytest "$@"
