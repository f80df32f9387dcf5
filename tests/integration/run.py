#!/usr/bin/env python3
"""Tiny test runner for the integration tests.

    python3 tests/integration/run.py [FILTER ...]

Discovers the functions named test_* in tests/integration/test_*.py (in file order),
runs each one, prints "ok NAME" or "FAIL NAME: message", and ends with the line
"N passed, N failed"; exits 1 when anything failed. A FILTER is a substring of
"module.test_name"; with several filters a test runs when any matches.
"""
import importlib
import os
import socket
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def wait_for_server(seconds=10):
    """Wait until BASE_URL accepts TCP connections (the tests fail loudly anyway)."""
    import lib
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            socket.create_connection((lib.HOST, lib.PORT), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)


def message(exc):
    if isinstance(exc, AssertionError):
        text = str(exc) or "assertion failed"
        tb = traceback.extract_tb(exc.__traceback__)
        if not str(exc) and tb:
            f = tb[-1]
            text = "assertion failed at %s:%d: %s" % (os.path.basename(f.filename), f.lineno, f.line)
    else:
        tb = traceback.extract_tb(exc.__traceback__)
        where = ""
        for f in reversed(tb):
            if f.filename.startswith(HERE):
                where = " (at %s:%d)" % (os.path.basename(f.filename), f.lineno)
                break
        text = "%s: %s%s" % (type(exc).__name__, exc, where)
    return text.replace("\n", "\n    ")


def main(argv):
    filters = argv[1:]
    wait_for_server()
    passed = failed = 0
    started = time.time()
    for fname in sorted(os.listdir(HERE)):
        if not (fname.startswith("test_") and fname.endswith(".py")):
            continue
        modname = fname[:-3]
        try:
            mod = importlib.import_module(modname)
        except Exception as exc:  # a module that does not load is one failure
            if not filters or any(f in modname for f in filters):
                print("FAIL %s: import: %s" % (modname, message(exc)), flush=True)
                failed += 1
            continue
        tests = [(n, f) for n, f in vars(mod).items()
                 if n.startswith("test_") and callable(f)]
        for name, fn in tests:
            full = "%s.%s" % (modname, name)
            if filters and not any(f in full for f in filters):
                continue
            try:
                fn()
            except Exception as exc:
                failed += 1
                print("FAIL %s: %s" % (full, message(exc)), flush=True)
            else:
                passed += 1
                print("ok %s" % full, flush=True)
    sys.stderr.write("integration: %.1f s\n" % (time.time() - started))
    sys.stderr.flush()
    print("%d passed, %d failed" % (passed, failed), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
