"""Runs last (file name): a database outage (503 + Retry-After, nothing applied, the
client retries with the same ids), then a scan of the stack's files for keys in
plain text (API.md §1: keys are never stored in plain text, never logged).

The outage test needs RFEVENTS_STACK (tests/stack.sh, with VAR/PORT/CONF/PROCS of this
stack exported by tests/run.sh); without it the test is not defined."""
import os
import subprocess
import time

from lib import (ALL_KEYS, BATCH, EVENTS, admin, check, expect_accepted, expect_duplicate,
                 expect_error, expect_status, fail, get, get_event, post, purchase, reader,
                 request, writer)

STACK = os.environ.get("RFEVENTS_STACK")
VAR = os.environ.get("RFEVENTS_VAR")


def _stack(cmd):
    env = dict(os.environ)
    if VAR:
        env.setdefault("VAR", VAR)
    p = subprocess.run([STACK, cmd], env=env, capture_output=True, text=True, timeout=240)
    if p.returncode != 0:
        raise AssertionError("%s %s: exit %d: %s%s" % (STACK, cmd, p.returncode, p.stdout[-2000:], p.stderr[-2000:]))


def _until(fn, seconds):
    deadline = time.time() + seconds
    r = fn()
    while r.status == 503 and time.time() < deadline:
        time.sleep(0.5)
        r = fn()
    return r


def _unavailable(r, what):
    expect_error(r, 503, "unavailable", what=what)
    check(r.headers.get("retry-after", "").strip().isdigit(),
          "%s: 503 needs a Retry-After in seconds: %s %r" % (what, r.describe(), r.headers))
    check(r.headers.get("x-request-id"), "%s: no X-Request-Id on the 503" % what)


if STACK and VAR:
    def test_database_outage_503_and_recovery():
        k, rk = writer(), reader()
        admin()
        a = expect_accepted(post(purchase(), k), what="before the outage")
        b_ev, c_ev, d_ev = purchase(), purchase(), purchase()
        try:
            _stack("db-stop")
            h = get("/v1/health")
            check(h.status == 503 and h.is_json,
                  "GET /v1/health with the database down: expected a JSON 503, got " + h.describe())
            _unavailable(post(b_ev, k), "POST event, database down")
            _unavailable(request("POST", BATCH, {"items": [c_ev, d_ev]}, key=k), "batch, database down")
            _unavailable(get_event(a["event_id"], rk), "GET event, database down")
            _unavailable(post(b_ev, k, path=EVENTS + "?dry_run=true"), "dry run, database down")
        finally:
            _stack("db-start")
        h = _until(lambda: get("/v1/health"), 60)
        check(h.status == 200, "health after the database came back: " + h.describe())
        # retry with the same ids: nothing of the failed requests was applied
        r = _until(lambda: post(b_ev, k), 30)
        b = expect_accepted(r, what="the event refused during the outage, retried")
        r = _until(lambda: request("POST", BATCH, {"items": [c_ev, d_ev]}, key=k), 30)
        check(r.status == 200 and r.is_json and [x.get("status") for x in r.body.get("results", [])]
              == ["accepted", "accepted"], "the batch refused during the outage, retried: " + r.describe())
        expect_duplicate(post(b_ev, k), b["event_id"], what="the retried event once more")
        expect_status(get_event(a["event_id"], rk), 200, what="GET the event from before the outage")

    def test_database_restart_is_transparent():
        """DESIGN.md: a lost connection is reconnected once before answering 503. After a
        restart of the database with no request during the outage, every process's next
        request reconnects and succeeds."""
        k = writer()
        warm = [post(purchase(), k).status for _ in range(16)]      # every process connected
        check(all(s == 201 for s in warm), "before the restart: %r" % warm)
        try:
            _stack("db-stop")
        finally:
            _stack("db-start")              # returns once the database answers
        time.sleep(0.5)
        rs = [post(purchase(), k) for _ in range(16)]
        bad = [r.describe(200) for r in rs if r.status != 201]
        check(not bad, "%d of 16 requests after a database restart failed (no reconnect?): %s" % (
            len(bad), bad[:4]))


def test_keys_never_in_plain_text_under_var():
    """No key made by this run appears in any file of the stack (database files, logs)."""
    if not VAR or not os.path.isdir(VAR):
        fail("RFEVENTS_VAR is not a directory: %r" % VAR)
    k = writer()
    post(purchase(), k)                                   # used at least once
    post(purchase(), k + "x")   # a 401 carrying the key plus one byte: must not be logged either
    keys = sorted({x.encode() for x in ALL_KEYS}, key=len)
    check(keys, "no keys were made")
    found = []
    for root, _dirs, files in os.walk(VAR):
        for name in files:
            path = os.path.join(root, name)
            if not os.path.isfile(path) or os.path.islink(path):
                continue
            try:
                with open(path, "rb") as f:
                    tail = b""
                    while True:
                        chunk = f.read(1 << 20)
                        if not chunk:
                            break
                        buf = tail + chunk
                        for key in keys:
                            if key in buf:
                                found.append("%s contains key %s..." % (path, key[:12].decode()))
                        tail = buf[-512:]
            except OSError:
                continue
    found = sorted(set(found))
    if found:
        fail("keys in plain text under %s:\n  %s" % (VAR, "\n  ".join(found[:20])))
