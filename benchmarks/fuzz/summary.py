"""Summarise the fuzzing logs (runs/fuzz/<harness>.log) into benchmarks/results/fuzz.md."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

from benchmarks.machine import machine

HARNESSES = ("dicom", "raster", "itk", "manifest")


def main() -> None:
    m = machine()
    lines = [f"# Fuzzing the loaders ({date.today()})", "",
             f"Machine: {m['cpu']}, {m['cores']} cores. Command: `bash benchmarks/fuzz/run.sh` (atheris, "
             "coverage-guided; any exception other than a BreastCADxError is a crash). Seeds: the hostile corpus "
             "(`BreastCADx/Testing/Data/bad`) and the sample case.", "",
             "| harness | executions | seconds | exec/s | crashes | coverage (edges) |", "|---|---|---|---|---|---|"]
    for h in HARNESSES:
        log = Path("runs/fuzz") / f"{h}.log"
        if not log.exists():
            lines.append(f"| {h} | not run | | | | |")
            continue
        text = log.read_text(errors="replace")
        runs = re.findall(r"Done (\d+) runs in (\d+) second", text)
        execs, secs = (int(runs[-1][0]), int(runs[-1][1])) if runs else (None, None)
        if execs is None:
            last = re.findall(r"#(\d+)\s", text)
            execs = int(last[-1]) if last else 0
        cov = re.findall(r"cov: (\d+)", text)
        crashes = len(list((Path("runs/fuzz") / h).glob("crash-*"))) + text.count("Uncaught Python exception")
        rate = f"{execs / secs:.0f}" if secs else ""
        lines.append(f"| {h} | {execs:,} | {secs or ''} | {rate} | {crashes} | {cov[-1] if cov else ''} |")
    Path("benchmarks/results/fuzz.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
