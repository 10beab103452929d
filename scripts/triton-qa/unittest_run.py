"""Runs one unittest file as `python FILE [Class.test ...]` would, recording each test.

    python unittest_run.py OUT.json FILE [NAME ...] [--skip ID ...] [-k SUBSTRING]

Triton's test files are run unchanged with the unittest machinery they are
written for (many derive from test_util.TestResultCollector, which reads
unittest's own result object, so pytest cannot run them faithfully). The
runner here only observes: every test's outcome, duration and failure
message go to OUT.json, rewritten after each test so that a run killed for
its timeout still leaves what finished.
"""

import importlib.util
import json
import sys
import time
import traceback
import unittest
from pathlib import Path


def one_line(text, limit=500):
    text = " ".join(part.strip() for part in str(text).splitlines() if part.strip())
    return text[:limit]


class Recorder(unittest.TextTestResult):
    def __init__(self, *args, out=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.out = out
        self.records = []
        self.started = {}

    def _id(self, test):
        return ".".join(test.id().split(".")[-2:])

    def _add(self, test, outcome, message=""):
        t0 = self.started.pop(test.id(), time.monotonic())
        self.records.append(
            {
                "test": self._id(test),
                "outcome": outcome,
                "message": message,
                "seconds": round(time.monotonic() - t0, 3),
            }
        )
        self.out.write_text(json.dumps(self.records, indent=1))

    @staticmethod
    def _message(err):
        etype, value, tb = err
        # Where in Triton's qa/ files it failed (not inside tritonclient).
        qa = str(Path.cwd().parent)
        frames = [f for f in traceback.extract_tb(tb) if f.filename.startswith(qa)]
        where = ""
        if frames:
            f = frames[-1]
            where = f" (at {Path(f.filename).name}:{f.lineno})"
        return one_line(f"{etype.__name__}: {value}") + where

    def startTest(self, test):
        self.started[test.id()] = time.monotonic()
        super().startTest(test)

    def addSuccess(self, test):
        super().addSuccess(test)
        self._add(test, "passed")

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._add(test, "failed", self._message(err))

    def addError(self, test, err):
        super().addError(test, err)
        self._add(test, "error", self._message(err))

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._add(test, "skipped", one_line(reason))

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self._add(test, "passed", "expected failure")

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._add(test, "failed", "unexpected success")

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is None:
            return
        # A test counts once, however many of its subtests fail: the
        # failures are listed under it.
        kind = "failed" if issubclass(err[0], test.failureException) else "error"
        msg = f"{subtest._subDescription()}: {self._message(err)}"
        last = self.records[-1] if self.records else None
        if last and last["test"] == self._id(test):
            last["message"] = (last["message"] + " ; " + msg)[:1000]
            self.out.write_text(json.dumps(self.records, indent=1))
        else:
            self.started[test.id()] = self.started.get(test.id(), time.monotonic())
            self._add(test, kind, msg)
            self.started[test.id()] = time.monotonic()


def flatten(suite):
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            yield from flatten(t)
        else:
            yield t


def main():
    args = sys.argv[1:]
    out, file = Path(args[0]), args[1]
    names, skip, keyword = [], [], None
    rest = iter(args[2:])
    for a in rest:
        if a == "--skip":
            skip.append(next(rest))
        elif a == "-k":
            keyword = next(rest)
        else:
            names.append(a)
    out.write_text("[]")
    sys.path.insert(0, str(Path.cwd()))
    sys.argv = [file, *names]
    spec = importlib.util.spec_from_file_location(Path(file).stem, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    loader = unittest.TestLoader()
    if names:
        suite = unittest.TestSuite(loader.loadTestsFromName(n, module) for n in names)
    else:
        suite = loader.loadTestsFromModule(module)

    def wanted(t):
        tid = ".".join(t.id().split(".")[-2:])
        if any(tid == s or tid.startswith(s + ".") or tid.split(".")[0] == s for s in skip):
            return False
        return keyword is None or keyword in tid

    tests = [t for t in flatten(suite) if wanted(t)]
    runner = unittest.TextTestRunner(
        verbosity=2,
        resultclass=lambda *a, **kw: Recorder(*a, out=out, **kw),
    )
    result = runner.run(unittest.TestSuite(tests))
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
