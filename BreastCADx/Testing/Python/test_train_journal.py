"""The run journal of a training folder (train/journal.py): a run that spans days is many runs of one command, and
the log and the set's card must say which, with each one's time box and how it ended."""

from __future__ import annotations

import json
import unittest
from pathlib import Path
from tempfile import TemporaryDirectory

from BreastCADxLib.train.journal import NO_END, UNRECORDED, RunJournal, ending, runs_text
from BreastCADxLib.train.pipeline import TrainError


class RunJournalTest(unittest.TestCase):
    def setUp(self) -> None:
        self._tmp = TemporaryDirectory()
        self.work = Path(self._tmp.name) / "set" / ".work"

    def tearDown(self) -> None:
        self._tmp.cleanup()

    def runs(self) -> list[dict]:
        return json.loads((self.work / "runs.json").read_text())

    def test_a_run_killed_without_a_word_is_marked_when_the_next_one_starts(self):
        first = RunJournal(self.work, 90)
        self.assertTrue(first.start().startswith("run 1 of this folder: started "))
        first.stage("manifest", 1.23)  # then SIGKILL: no end
        line = RunJournal(self.work).start()
        self.assertIn("run 2 of this folder", line)
        self.assertIn("before it: run 1 from ", line)
        self.assertIn("time box 90 min, stages finished: manifest; " + NO_END, line)
        runs = self.runs()
        self.assertEqual(runs[0]["outcome"], NO_END)
        self.assertEqual(runs[0]["stages"], {"manifest": 1.2})
        self.assertNotIn("outcome", runs[1])

    def test_how_a_run_ended_is_recorded_in_words(self):
        j = RunJournal(self.work, 0.5)
        j.start()
        j.end(ending(TrainError("--max-minutes reached in the segmenter stage (run the same command again)")))
        j2 = RunJournal(self.work)
        j2.start()
        j2.end(ending(KeyboardInterrupt()))
        runs = self.runs()
        self.assertEqual(runs[0]["outcome"], "stopped: --max-minutes reached in the segmenter stage (run the same "
                                             "command again)")
        self.assertEqual(runs[1]["outcome"], "interrupted (Ctrl-C)")
        text = runs_text(runs)
        self.assertTrue(text.startswith("Made over 2 runs of the command (0.0 h recorded):"))
        self.assertIn("1. ", text)
        self.assertIn(" to ", text)
        self.assertIn("time box 0.5 min", text)

    def test_work_from_before_the_journal_is_not_passed_off_as_one_run(self):
        self.work.mkdir(parents=True)
        (self.work / "case.npz").write_bytes(b"")
        line = RunJournal(self.work).start()
        self.assertIn("run 2 of this folder", line)
        self.assertIn(UNRECORDED, line)

    def test_an_unreadable_journal_is_said_so_and_replaced(self):
        self.work.mkdir(parents=True)
        (self.work / "runs.json").write_text("{not json")
        RunJournal(self.work).start()
        runs = self.runs()
        self.assertEqual(len(runs), 2)
        self.assertIn("unreadable", runs[0]["outcome"])


if __name__ == "__main__":
    unittest.main()
