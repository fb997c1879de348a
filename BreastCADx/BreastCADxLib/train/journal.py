"""A training folder's run journal (`.work/runs.json`): every run of `breastcadx train` on the folder, when it
started and ended, its time box, the stages it finished and how it ended. A run that spans days is made of many
such runs; the log and the set's card say which."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

JOURNAL = "runs.json"
FINISHED = "finished"
NO_END = "no end recorded (stopped from outside: killed, or the machine stopped)"
UNRECORDED = "runs before this journal existed (not recorded)"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _clock(iso: str | None) -> str:
    return iso.replace("T", " ").replace("+00:00", " UTC") if iso else "?"


def ending(exc: BaseException) -> str:
    """How a run that raised `exc` ended, in words (a TrainError's cause: the time box says so)."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (Ctrl-C)"
    text = getattr(exc, "cause", None) or str(exc) or type(exc).__name__
    return f"stopped: {text}"


class RunJournal:
    """The runs of one training folder. start() records this run (and marks an earlier one that left no end);
    stage() after each finished stage; end() once, with how it ended."""

    def __init__(self, work: Path, budget_minutes: float = 0.0) -> None:
        self.path = Path(work) / JOURNAL
        self.budget = float(budget_minutes) or None
        self.runs: list[dict] = []

    def start(self) -> str:
        """Records this run; returns the log line (this run, its time box, the runs before it)."""
        work = self.path.parent
        runs = read_runs(work)
        if not runs and work.is_dir() and any(p.name != JOURNAL for p in work.iterdir()):
            runs = [{"outcome": UNRECORDED}]
        for r in runs:
            r.setdefault("outcome", NO_END)
        self.runs = [*runs, {"started": _now(), "budget_minutes": self.budget, "stages": {}}]
        self._write()
        box = f"time box {self.budget:g} min" if self.budget else "no time box"
        line = f"run {len(self.runs)} of this folder: started {_clock(self.runs[-1]['started'])}, {box}"
        return line + ("" if len(runs) == 0 else "; before it: " + "; ".join(
            f"run {k + 1} {describe(r)}" for k, r in enumerate(runs)))

    def stage(self, name: str, seconds: float) -> None:
        """A finished stage of this run (none after end(): the card, written then, quotes the journal)."""
        if self.runs and "stages" in self.runs[-1] and "ended" not in self.runs[-1]:
            self.runs[-1]["stages"][name] = round(seconds, 1)
            self._write()

    def end(self, outcome: str = FINISHED) -> None:
        if self.runs:
            self.runs[-1].update(ended=_now(), outcome=outcome)
            self._write()

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.runs, indent=1) + "\n")
        tmp.replace(self.path)


def read_runs(work: Path) -> list[dict]:
    """A folder's journalled runs ([] when it has none; one entry saying so when the journal is unreadable)."""
    path = Path(work) / JOURNAL
    try:
        runs = json.loads(path.read_text()) if path.is_file() else []
        if not isinstance(runs, list) or not all(isinstance(r, dict) for r in runs):
            raise ValueError
    except (ValueError, OSError, UnicodeDecodeError):
        runs = [{"outcome": "the journal was unreadable: runs before this one not known"}]
    return runs


def describe(r: dict) -> str:
    """One run in words: its start and end, time box, the stages it finished and how it ended."""
    if "started" not in r:
        return r.get("outcome", UNRECORDED)
    box = f"time box {r['budget_minutes']:g} min" if r.get("budget_minutes") else "no time box"
    span = f"{_clock(r['started'])} to {_clock(r.get('ended'))}" if r.get("ended") else f"from {_clock(r['started'])}"
    stages = ", ".join(r.get("stages") or {}) or "none"
    return f"{span}, {box}, stages finished: {stages}; {r.get('outcome', NO_END)}"


def runs_text(runs: list[dict]) -> str:
    """The card's paragraph: how many runs made the set, and each."""
    timed = [r for r in runs if r.get("started") and r.get("ended")]
    hours = sum((datetime.fromisoformat(r["ended"]) - datetime.fromisoformat(r["started"])).total_seconds()
                for r in timed) / 3600
    head = f"Made over {len(runs)} run{'s' if len(runs) != 1 else ''} of the command ({hours:.1f} h recorded):"
    return "\n".join([head, "", *(f"{k + 1}. {describe(r)}" for k, r in enumerate(runs))])


__all__ = ["RunJournal", "read_runs", "ending", "describe", "runs_text", "JOURNAL", "FINISHED", "NO_END", "UNRECORDED"]
