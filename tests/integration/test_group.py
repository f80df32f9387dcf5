"""Single events that arrive together share a transaction (fcgi/fcgi.h
fcgi_handle_many()): each must still be answered exactly as if sent alone.

The web server cannot be told to deliver requests at the same instant, so these
tests run a FastCGI worker of their own: they queue requests on a listening unix
socket first (with the valgrind driver's FastCGI client, tests/leaks_driver.py),
then start bin/rfevents.fcgi on it.
The worker finds them all waiting and takes them as one group, deterministically.
Its metrics go to a file of its own, so the group counts are exact."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile

from lib import EVENTS, check, check_error_body, make_key, purchase, sql, uid, writer

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from leaks_driver import read_answer, request_bytes  # noqa: E402  (the FastCGI client)


def _read_answer(sock):
    """(status, headers, JSON body) of one FastCGI answer on sock."""
    sock.settimeout(60)
    status, headers, body = read_answer(sock)
    try:
        return status, headers, json.loads(body) if body else None
    except ValueError:
        return status, headers, body


class Worker:
    """A listening socket with requests queued on it, then a worker started on it."""

    def __init__(self, group=None):
        self.dir = tempfile.mkdtemp(prefix="rfevents-group-")
        self.path = os.path.join(self.dir, "fcgi.sock")
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(64)
        self.group = group
        self.proc = None
        self.log = os.path.join(self.dir, "stderr.log")

    def send(self, method, path, body=b"", headers=None):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(self.path)
        if body:
            headers = dict(headers or {}, **{"Content-Type": "application/json"})
        s.sendall(request_bytes(method, path, body, headers))
        return s

    def start(self):
        binary = os.path.join(os.path.dirname(os.path.abspath(
            os.environ.get("RFEVENTS_BIN", "bin/rfevents"))), "rfevents.fcgi")
        env = dict(os.environ, RFEVENTS_METRICS=os.path.join(self.dir, "metrics"))
        env.pop("RFEVENTS_GROUP", None)
        if self.group is not None:
            env["RFEVENTS_GROUP"] = str(self.group)
        self.proc = subprocess.Popen([binary], stdin=self.listener.fileno(),
                                     stdout=subprocess.DEVNULL,
                                     stderr=open(self.log, "wb"), env=env)

    def stop(self):
        """SIGTERM, a clean exit, and no sanitizer report in its stderr."""
        try:
            if self.proc is not None:
                self.proc.send_signal(signal.SIGTERM)
                # the signal ends its wait in poll(); a connection wakes it too
                try:
                    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as wake:
                        wake.connect(self.path)
                except OSError:
                    pass
                rc = self.proc.wait(timeout=60)
                log = open(self.log, errors="replace").read()
                check(not re.search(r"ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:",
                                    log), "sanitizer report from the worker:\n" + log[-3000:])
                check(rc == 0, "the worker exited with %r:\n%s" % (rc, log[-2000:]))
        finally:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.listener.close()
            shutil.rmtree(self.dir, ignore_errors=True)


def _json(obj):
    return json.dumps(obj).encode()


def _post(w, ev, key, reqid=None, query=""):
    h = {"Authorization": "Bearer " + key}
    if reqid:
        h["X-Request-Id"] = reqid
    return w.send("POST", EVENTS + query, _json(ev), h)


def _get(w, path, key, what):
    """GET path from the worker with key: its JSON body (or bytes), status 200."""
    s = w.send("GET", path, headers={"Authorization": "Bearer " + key})
    st, _, body = _read_answer(s)
    s.close()
    check(st == 200, "%s from the worker: %s %r" % (what, st, body))
    return body


def _metric(w, key, name):
    body = _get(w, "/metrics", key, "GET /metrics")
    m = re.search(r"^%s (\d+)$" % re.escape(name), body.decode(), re.M)
    check(m, "no %s in the worker's metrics" % name)
    return int(m.group(1))


def _profile_points(w, key, profile_id):
    doc = _get(w, "/v1/cdp/profiles/" + profile_id, key, "GET profile")
    return doc["balances"]["points"]["balance"]


def test_waiting_single_events_are_served_as_one_group():
    """Twelve requests wait before the worker starts. The first ten (up to the
    health check, which ends the group) are taken at once: the five single events
    of acme that pass validation share one transaction, the others are served on
    their own; the last two form a second group. Every answer is the one the
    request gets alone."""
    k, kb, ka = writer(), writer("globex"), make_key("acme", ["admin"])
    user = {"externalUserId": uid("u")}
    e1 = purchase(identity=user, properties={"order_id": uid("o"), "amount": 10, "currency": "USD"})
    e2 = purchase(identity=user, properties={"order_id": uid("o"), "amount": 20, "currency": "USD"})
    e1_changed = dict(e1, properties=dict(e1["properties"], amount=11))
    bad = purchase(identity=user)
    del bad["eventType"]
    other = purchase()
    dry = purchase(identity=user)
    e_alone = purchase(identity=user)
    e_v = purchase()
    e5 = purchase(identity=user, properties={"order_id": uid("o"), "amount": 5, "currency": "USD"})
    e6 = purchase(identity=user, properties={"order_id": uid("o"), "amount": 6, "currency": "USD"})
    ids = {n: uid("req") for n in ("e1", "e2", "e1b", "e1c", "e_v", "e5", "e6")}
    w = Worker()
    try:
        socks = [
            ("e1", _post(w, e1, k, ids["e1"])),
            ("e2", _post(w, e2, k, ids["e2"])),
            ("e1b", _post(w, e1, k, ids["e1b"])),             # the same event again
            ("e1c", _post(w, e1_changed, k, ids["e1c"])),     # its key, another payload
            ("bad", _post(w, bad, k)),
            ("other", _post(w, other, kb)),                   # another tenant
            ("dry", _post(w, dry, k, query="?dry_run=true")),
            ("nokey", _post(w, e_alone, "rfe_nosuchkey_" + "x" * 40)),
            ("e_v", _post(w, e_v, k, ids["e_v"])),
            ("health", w.send("GET", "/v1/health")),
            ("e5", _post(w, e5, k, ids["e5"])),
            ("e6", _post(w, e6, k, ids["e6"])),
        ]
        w.start()
        got = {}
        for name, s in socks:
            got[name] = _read_answer(s)
            s.close()
        st, h, b = got["e1"]
        st2, _, b2 = got["e1b"]
        # the two copies of e1: one is stored, the other is its duplicate
        if st == 200:
            (st, b), (st2, b2) = (st2, b2), (st, b)
        check(st == 201 and b["status"] == "accepted", "e1: %s %r" % (st, b))
        check(st2 == 200 and b2 == {"status": "duplicate", "original_event_id": b["event_id"]},
              "e1 again: %s %r" % (st2, b2))
        first = b
        st, h, b = got["e1c"]
        check(st == 409 and b.get("error_code") == "conflict" and
              b.get("original_event_id") == first["event_id"], "e1 changed: %s %r" % (st, b))
        st, h, b = got["e2"]
        check(st == 201 and b["status"] == "accepted" and b["profile_id"] == first["profile_id"],
              "e2: %s %r" % (st, b))
        check(h.get("location") == "/v1/cdp/events/" + b["event_id"], "e2 Location: %r" % h)
        check(h.get("x-request-id") == ids["e2"], "e2 X-Request-Id: %r" % h)
        st, _, b = got["bad"]
        check(st == 422, "event without eventType: %s %r" % (st, b))
        check_error_body(b, "validation_failed", "event without eventType", "eventType")
        st, _, b = got["other"]
        check(st == 201 and b["status"] == "accepted", "globex event: %s %r" % (st, b))
        for tenant, want in (("globex", 200), ("acme", 404)):
            s = w.send("GET", "/v1/cdp/events/" + b["event_id"], headers={
                "Authorization": "Bearer " + make_key(tenant, ["events:read"])})
            st, _, doc = _read_answer(s)
            s.close()
            check(st == want, "the globex event read by %s: %s %r" % (tenant, st, doc))
        st, _, b = got["dry"]
        check(st == 200 and b["status"] == "dry_run" and "event_id" not in b,
              "dry run: %s %r" % (st, b))
        st, _, b = got["nokey"]
        check(st == 401, "unknown key: %s %r" % (st, b))
        st, _, b = got["e_v"]
        check(st == 201 and b["profile_created"] is True and
              b["profile_id"] != first["profile_id"], "e_v: %s %r" % (st, b))
        st, _, b = got["health"]
        check(st == 200, "health: %s %r" % (st, b))
        for n in ("e5", "e6"):
            st, _, b = got[n]
            check(st == 201 and b["profile_id"] == first["profile_id"], "%s: %s %r" % (n, st, b))
        # the group of five (e1 twice, e1 changed, e2, e_v), then e5 and e6
        check(_metric(w, ka, "rfevents_event_groups_total") == 2,
              "groups: %d" % _metric(w, ka, "rfevents_event_groups_total"))
        check(_metric(w, ka, "rfevents_grouped_events_total") == 7,
              "grouped events: %d" % _metric(w, ka, "rfevents_grouped_events_total"))
        # the balance holds each accepted event once; the dry run none
        want = sum(got[n][2]["points_awarded"] for n in ("e2", "e5", "e6")) + first["points_awarded"]
        check(_profile_points(w, ka, first["profile_id"]) == want,
              "points of the user: want %d" % want)
        # each stored event names the request that sent it
        rows = sql("SELECT public_id, request_id FROM events WHERE public_id IN (%s)" % ",".join(
            "'%s'" % got[n][2]["event_id"] for n in ("e2", "e_v", "e5", "e6")))
        stored = dict(line.split("\t") for line in rows.strip().split("\n"))
        for n in ("e2", "e_v", "e5", "e6"):
            check(stored.get(got[n][2]["event_id"]) == ids[n],
                  "%s stored with request id %r, sent %r" % (n, stored.get(got[n][2]["event_id"]), ids[n]))
        check(stored and len(set(stored.values())) == 4, "request ids: %r" % stored)
        dry_rows = sql("SELECT COUNT(*) FROM events WHERE external_event_id = '%s'"
                       % dry["externalEventId"])
        check(dry_rows.strip() == "0", "the dry run was stored: %r" % dry_rows)
    finally:
        w.stop()


def test_group_of_one_when_turned_off():
    """RFEVENTS_GROUP=1: the same waiting requests are served one by one, with the
    same answers and no shared transaction."""
    k, ka = writer(), make_key("acme", ["admin"])
    user = {"externalUserId": uid("u")}
    evs = [purchase(identity=user) for _ in range(4)]
    w = Worker(group=1)
    try:
        socks = [_post(w, ev, k) for ev in evs] + [_post(w, evs[0], k)]
        w.start()
        answers = [_read_answer(s) for s in socks]
        for s in socks:
            s.close()
        for i, (st, _, b) in enumerate(answers[:4]):
            check(st == 201 and b["status"] == "accepted", "event %d: %s %r" % (i, st, b))
        st, _, b = answers[4]
        check(st == 200 and b["original_event_id"] == answers[0][2]["event_id"],
              "the first again: %s %r" % (st, b))
        check(_metric(w, ka, "rfevents_event_groups_total") == 0, "a group was formed")
    finally:
        w.stop()


def test_many_waiting_events_of_one_user_add_up():
    """Thirty-seven events of one user queued at once (more than a group holds):
    every one is accepted once, each one's balance_after is distinct, and the
    balance is their sum. The groups are 16, 16 and 5 events: the last one's event
    and ledger inserts are sent padded to 8 rows, whose repeats must store
    nothing."""
    k, ka = writer(), make_key("acme", ["admin"])
    user = {"externalUserId": uid("u")}
    evs = [purchase(identity=user, properties={"order_id": uid("o"), "amount": i + 1,
                                               "currency": "USD"}) for i in range(37)]
    w = Worker()
    try:
        socks = [_post(w, ev, k) for ev in evs]
        w.start()
        answers = [_read_answer(s) for s in socks]
        for s in socks:
            s.close()
        pids = set()
        for i, (st, _, b) in enumerate(answers):
            check(st == 201 and b["status"] == "accepted", "event %d: %s %r" % (i, st, b))
            pids.add(b["profile_id"])
        check(len(pids) == 1, "one user became %d profiles" % len(pids))
        want = sum(b["points_awarded"] for _, _, b in answers)
        check(_profile_points(w, ka, pids.pop()) == want, "the balance is not the sum %d" % want)
        check(_metric(w, ka, "rfevents_event_groups_total") >= 3,
              "37 waiting events made %d groups" % _metric(w, ka, "rfevents_event_groups_total"))
        check(_metric(w, ka, "rfevents_grouped_events_total") == 37,
              "%d of 37 events grouped" % _metric(w, ka, "rfevents_grouped_events_total"))
        ids = ",".join("'%s'" % b["event_id"] for _, _, b in answers)
        after = sql("SELECT COUNT(DISTINCT l.balance_after), COUNT(*) FROM ledger l"
                    " JOIN events e ON e.id = l.event_id WHERE e.public_id IN (%s)" % ids)
        check(after.split() == ["37", "37"], "ledger rows (distinct balances, rows): %r" % after)
    finally:
        w.stop()
