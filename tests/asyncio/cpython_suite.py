#!/usr/bin/python3
"""Runs one module of CPython's own asyncio tests (Debian's libpython3.11-testsuite)
on asyncio's stock loop or on laurel's, and prints each test's outcome as JSON.

    /usr/bin/python3 tests/asyncio/cpython_suite.py --loop laurel test_tasks

With --loop laurel, every loop the tests make through the event-loop policy or as
asyncio.SelectorEventLoop(...) is a laurel.loop.LaurelLoop (the selector argument is
ignored: laurel's loop polls with libev). tests/asyncio/test_cpython_asyncio.py compares
the two runs.
"""

import argparse
import asyncio
import json
import signal
import sys
import unittest
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def use_laurel_loop():
    for p in (str(REPO / "python"), str(REPO / "build")):
        sys.path.insert(0, p)
    import laurel.loop

    class SelectorEventLoop(laurel.loop.LaurelLoop):
        """What asyncio.SelectorEventLoop(selector) gives under this runner."""

        def __init__(self, selector=None):
            super().__init__()

    class Policy(asyncio.DefaultEventLoopPolicy):
        _loop_factory = SelectorEventLoop

    asyncio.SelectorEventLoop = SelectorEventLoop
    asyncio.unix_events.SelectorEventLoop = SelectorEventLoop
    asyncio.DefaultEventLoopPolicy = Policy
    asyncio.unix_events.DefaultEventLoopPolicy = Policy
    asyncio.set_event_loop_policy(Policy())


class Collect(unittest.TestResult):
    def __init__(self):
        super().__init__()
        self.outcomes = {}

    def addSuccess(self, test):
        self.outcomes[test.id()] = "pass"

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self.outcomes[test.id()] = "fail"

    def addError(self, test, err):
        super().addError(test, err)
        self.outcomes[test.id()] = "error"

    def addSkip(self, test, reason):
        self.outcomes[test.id()] = "skip"

    def addExpectedFailure(self, test, err):
        self.outcomes[test.id()] = "pass"

    def addUnexpectedSuccess(self, test):
        self.outcomes[test.id()] = "fail"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loop", choices=("stock", "laurel"), required=True)
    ap.add_argument("--details", action="store_true", help="print tracebacks to stderr")
    ap.add_argument("module", help="a module of test.test_asyncio, e.g. test_tasks")
    args = ap.parse_args()
    # A shell starts background jobs with SIGINT ignored, and an ignored SIGINT is
    # inherited: asyncio.Runner then installs no handler and test_runners'
    # test_interrupt_* spin for ever, growing. Run the suite as a terminal would.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if args.loop == "laurel":
        use_laurel_loop()
    name = f"test.test_asyncio.{args.module}"
    suite = unittest.defaultTestLoader.loadTestsFromName(name)
    result = Collect()
    suite.run(result)
    if args.details:
        for test, tb in result.failures + result.errors:
            print(f"=== {test.id()}\n{tb}", file=sys.stderr)
    json.dump(result.outcomes, sys.stdout, indent=0, sort_keys=True)
    print()


if __name__ == "__main__":
    main()
