"""`rfevents import FILE` (bulk loads through POST /v1/cdp/events/batch, API.md §2.2).

NDJSON and CSV files through the running service, lines refused locally and by the
service (errors file: LINE<TAB>error_code<TAB>message<TAB>original line), an import
killed with kill -9 and one stopped with SIGINT and then resumed (every event applied
exactly once: balances, and a full re-run answering duplicate for everything), and
retries with the same ids through a proxy that answers 503, drops connections,
answers too late and sends chunked bodies.
"""
import http.client
import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.parse

import lib
from lib import check, fail, uid

SUMMARY = re.compile(r"imported (\d+) lines: (\d+) accepted, (\d+) duplicate, (\d+) rejected"
                     r" \(([^)]*)\) in ([\d.]+) s, (\d+) events/s")


def _workdir():
    base = os.environ.get("RFEVENTS_VAR") or None
    return tempfile.mkdtemp(prefix="import-it.", dir=base)


def _import_cmd(path, *args, url=None, key=None):
    # --max-retries: a broken service fails the test in about 90 s instead of hanging it
    return [lib.RFEVENTS_BIN, "import", "--url", url or lib.BASE_URL, "--max-retries", "8",
            "--key", key or lib.writer()] + list(args) + [path]


def run_import(path, *args, url=None, key=None, timeout=600, expect=0):
    """Run an import to its end; returns (CompletedProcess, summary dict or None)."""
    p = subprocess.run(_import_cmd(path, *args, url=url, key=key), capture_output=True,
                       text=True, timeout=timeout)
    if expect is not None and p.returncode != expect:
        fail("rfevents import %s: exit %d, want %d\nstdout: %s\nstderr: %s" % (
            os.path.basename(path), p.returncode, expect, p.stdout[-2000:], p.stderr[-3000:]))
    return p, summary(p.stdout)


def summary(out):
    m = SUMMARY.search(out)
    if not m:
        return None
    return {"lines": int(m.group(1)), "accepted": int(m.group(2)),
            "duplicate": int(m.group(3)), "rejected": int(m.group(4)),
            "errors": m.group(5), "seconds": float(m.group(6)), "rate": int(m.group(7))}


def expect_summary(s, what, **want):
    check(s is not None, "%s: no summary line" % what)
    got = {k: s[k] for k in want}
    check(got == want, "%s: summary %r, want %r" % (what, got, want))


def read_errors(path):
    """{line number: (code, message, original)} from an errors file."""
    out = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for raw in f:
            raw = raw.rstrip("\n")
            parts = raw.split("\t", 3)
            check(len(parts) == 4 and parts[0].isdigit(),
                  "errors file line is not LINE<TAB>code<TAB>message<TAB>original: %r" % raw)
            n = int(parts[0])
            check(n not in out, "line %d is listed twice in %s" % (n, path))
            out[n] = (parts[1], parts[2], parts[3])
    return out


def write_lines(path, lines):
    with open(path, "w", encoding="utf-8", newline="") as f:
        for ln in lines:
            f.write(ln + "\n")


def points_event(user, eid, source):
    return {"source": source, "externalEventId": eid, "eventType": "points_adjusted",
            "identity": {"externalUserId": user}, "properties": {"points": 1, "reason": "import"}}


def balance(user):
    r = lib.get("/v1/cdp/profiles?externalUserId=" + urllib.parse.quote(user),
                lib.profiles_reader())
    lib.expect_status(r, 200, what="profile of %s" % user)
    return r.body["balances"]["points"]["balance"]


def stored_event_raw(ev):
    """The stored document of an imported event, as raw text: the same body sent once
    more answers duplicate (or conflict) naming the original event."""
    r = lib.post(ev, lib.writer())
    body = lib.expect_json_object(r)
    eid = body.get("original_event_id")
    check(eid, "re-sending %s did not name the original event: %s" % (
        ev["externalEventId"], r.describe()))
    g = lib.get_event(eid, lib.reader())
    lib.expect_status(g, 200, what="GET imported event")
    return g.raw.decode("utf-8")


# ---------------------------------------------------------------- NDJSON

def test_import_ndjson_5000_with_invalid_lines():
    d = _workdir()
    try:
        run, src = uid("nd"), "imp.nd"
        users = [uid("ndu") for _ in range(50)]
        lines, bad = [], {}
        events = {}
        for i in range(5000):
            ev = {"source": src, "externalEventId": "%s-%d" % (run, i),
                  "eventType": "purchase_completed",
                  "identity": {"externalUserId": users[i % 50]},
                  "properties": {"order_id": "o%d" % i, "amount": 12.5, "currency": "USD"}}
            events[i] = ev
            lines.append(json.dumps(ev))
        # line numbers are 1-based: lines[k] is line k+1 (before the blank line below)
        lines[9] = '{"source":"%s","externalEventId": oops' % src
        bad[10] = "malformed_json"
        lines[19] = json.dumps([events[19]])
        bad[20] = "malformed_json"
        e = dict(events[29], properties={"order_id": "x", "amount": -1, "currency": "USD"})
        lines[29] = json.dumps(e)
        bad[30] = "validation_failed"
        lines[39] = json.dumps(dict(events[39], eventType="no_such_type"))
        bad[40] = "unknown_event_type"
        lines[49] = json.dumps(dict(events[49], identity={"phone": "12"}))
        bad[50] = "invalid_identity"
        # the id of line 1 with another payload: conflict; of line 2 unchanged: duplicate
        lines[59] = json.dumps(dict(events[0], properties={"order_id": "o0", "amount": 99,
                                                           "currency": "USD"}))
        bad[60] = "conflict"
        lines[69] = json.dumps(events[1])
        # exact decimal text, and blanks around the object
        lines[89] = "  " + lines[89].replace('"amount": 12.5', '"amount": 120.50') + " \r"
        # a blank line after line 100 is skipped: later lines move down by one
        lines.insert(100, "")
        path = os.path.join(d, "events.ndjson")
        write_lines(path, lines)

        p, s = run_import(path)
        expect_summary(s, "first import", lines=5000, accepted=4993, duplicate=1, rejected=6)
        check(s["errors"].endswith("events.ndjson.errors"), "summary names %r" % s["errors"])
        check(not os.path.exists(path + ".state"), "the state file stays after a complete import")
        errs = read_errors(path + ".errors")
        check(sorted(errs) == sorted(bad), "errors file lines %r, want %r" % (sorted(errs), sorted(bad)))
        for n, code in bad.items():
            check(errs[n][0] == code, "line %d: error_code %r, want %r" % (n, errs[n][0], code))
            check(errs[n][1], "line %d: empty message" % n)
            check(errs[n][2] == lines[n - 1].rstrip("\r"),
                  "line %d: original %r, want %r" % (n, errs[n][2], lines[n - 1]))
        check("original_event_id" in errs[60][1], "conflict message lacks original_event_id: %r" % (errs[60],))
        check('"amount":120.50' in stored_event_raw(json.loads(lines[89])),
              "the exact decimal 120.50 did not survive the import")

        # again, from the start: nothing new is applied
        p, s = run_import(path)
        expect_summary(s, "second import", lines=5000, accepted=0, duplicate=4994, rejected=6)
        check(sorted(read_errors(path + ".errors")) == sorted(bad), "errors file of the re-run")

        # stdin: the same, without a state file
        with open(path, "rb") as f:
            q = subprocess.run(_import_cmd("-", "--errors", os.path.join(d, "stdin.err")),
                               stdin=f, capture_output=True, text=True, timeout=600)
        check(q.returncode == 0, "stdin import: exit %d: %s" % (q.returncode, q.stderr))
        expect_summary(summary(q.stdout), "stdin import", lines=5000, accepted=0, duplicate=4994,
                       rejected=6)
        check(sorted(read_errors(os.path.join(d, "stdin.err"))) == sorted(bad), "stdin errors file")
    finally:
        shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------- CSV

def _csv_field(v):
    if any(c in v for c in ',"\r\n'):
        return '"' + v.replace('"', '""') + '"'
    return v


def test_import_csv_1000_rows():
    d = _workdir()
    try:
        run = uid("csv")
        header = "txn,member,e-mail,amount,currency,cat,note,unused"
        rows, bad, physical = [], {}, 2          # the header is line 1
        starts = {}
        for i in range(1000):
            amount = "%d.%02d" % (i % 90, i % 100)
            note = "plain"
            if i % 97 == 3:
                note = 'two\r\nlines, "quoted"'    # one record over two lines
            fields = ["%s-%d" % (run, i), "m-%s-%d" % (run, i % 40), "M%d@Example.COM" % (i % 40),
                      amount, "EUR", "cat%d" % (i % 3), note, "x"]
            rec = ",".join(_csv_field(f) for f in fields)
            if i == 110:
                rec = ",".join(fields[:3] + ["12,50"] + fields[4:])     # 9 fields
                bad_code = "csv_field_count"
            elif i == 200:
                rec = ",".join(fields[:3] + ["abc"] + fields[4:])
                bad_code = "invalid_value"
            elif i == 300:
                rec = ",".join(fields[:4] + ["XXX"] + fields[5:])        # not in the enum
                bad_code = "validation_failed"
            elif i == 400:
                rec = ",".join(fields[:3] + ["0.10"] + fields[4:])
                bad_code = None
            elif i == 999:
                rec = ",".join(fields[:7]) + ',"never closed'
                bad_code = "malformed_csv"
            else:
                bad_code = None
            starts[i] = physical
            if bad_code:
                bad[physical] = (bad_code, rec)
            rows.append(rec)
            physical += rec.count("\n") + 1
        path = os.path.join(d, "orders.csv")
        with open(path, "w", encoding="utf-8", newline="") as f:
            f.write(header + "\r\n" + "\r\n".join(rows) + "\r\n")

        args = ["--source", "imp.csv", "--event-type", "purchase_completed",
                "--map", "txn=externalEventId,member=identity.externalUserId,e-mail=identity.email",
                "--map", "amount=properties.amount:number,currency=properties.currency,"
                         "cat=properties.category,note=properties.order_id"]
        p, s = run_import(path, *args)
        expect_summary(s, "CSV import", lines=1000, accepted=996, duplicate=0, rejected=4)
        check("unused" in p.stderr, "the unmapped column is not mentioned: %s" % p.stderr)
        errs = read_errors(path + ".errors")
        check(sorted(errs) == sorted(bad), "errors file lines %r, want %r" % (sorted(errs), sorted(bad)))
        for n, (code, rec) in bad.items():
            check(errs[n][0] == code, "line %d: error_code %r, want %r" % (n, errs[n][0], code))
            check(errs[n][2] == rec.replace("\r", "\\r").replace("\n", "\\n"),
                  "line %d: original %r, want %r" % (n, errs[n][2], rec))
        # the exact decimal text reached the service
        ev = {"source": "imp.csv", "externalEventId": "%s-400" % run, "eventType": "purchase_completed",
              "identity": {"externalUserId": "m-%s-0" % run, "email": "M0@Example.COM"},
              "properties": {"amount": 0.1, "currency": "EUR", "category": "cat1",
                             "order_id": "plain"}}
        check('"amount":0.10' in stored_event_raw(ev), "the exact decimal 0.10 did not survive")
        # a record over two physical lines arrived whole
        ev = dict(ev, externalEventId="%s-3" % run, identity={"externalUserId": "m-%s-3" % run},
                  properties={"order_id": 'two\r\nlines, "quoted"', "amount": 1,
                              "currency": "EUR"})
        check('two\\r\\nlines, \\"quoted\\"' in stored_event_raw(ev), "multi-line field")

        p, s = run_import(path, *args)
        expect_summary(s, "CSV re-run", lines=1000, accepted=0, duplicate=996, rejected=4)

        # resuming with another mapping is refused
        st = path + ".state"
        with open(st, "w") as f:
            f.write("rfevents-import-state 1\npath %s\nsize %d\nmtime %d.%09d\noptions %s\n"
                    "offset 100\nline 3\nlines 1\naccepted 1\nduplicate 0\nrejected 0\n"
                    "errors_size 0\n" % (os.path.realpath(path), os.path.getsize(path),
                                         os.stat(path).st_mtime_ns // 10**9,
                                         os.stat(path).st_mtime_ns % 10**9, "0" * 64))
        p, s = run_import(path, *args, expect=2)
        check("--restart" in p.stderr, "no hint at --restart: %s" % p.stderr)
        p, s = run_import(path, "--restart", *args)
        expect_summary(s, "CSV --restart", lines=1000, accepted=0, duplicate=996, rejected=4)
    finally:
        shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------- interrupted imports

def _wait_state(proc, state, min_lines, what, seconds=120):
    """Wait until the state file records at least min_lines (the import is under way)."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            out, err = proc.communicate()
            fail("%s: the import ended (exit %d) before it could be interrupted: %s %s" % (
                what, proc.returncode, out, err))
        try:
            with open(state) as f:
                m = re.search(r"^lines (\d+)$", f.read(), re.M)
            if m and int(m.group(1)) >= min_lines:
                return
        except OSError:
            pass
        time.sleep(0.02)
    proc.kill()
    fail("%s: no progress in the state file within %d s" % (what, seconds))


def _points_file(d, name, n, users, every_bad):
    """n points_adjusted events spread over users; every every_bad-th line is not JSON.
    Returns (path, {user: events}, sorted bad line numbers)."""
    run, src = uid("pt"), "imp.pt"
    want = {u: 0 for u in users}
    lines, bad = [], []
    for i in range(n):
        if i % every_bad == every_bad - 1:
            lines.append("{not json %d" % i)
            bad.append(i + 1)
            continue
        u = users[i % len(users)]
        want[u] += 1
        lines.append(json.dumps(points_event(u, "%s-%d" % (run, i), src), separators=(",", ":")))
    path = os.path.join(d, name)
    write_lines(path, lines)
    return path, want, bad


def test_import_20000_killed_and_resumed_applies_each_event_once():
    d = _workdir()
    try:
        users = [uid("k9u") for _ in range(20)]
        path, want, bad = _points_file(d, "big.ndjson", 20000, users, 1000)
        valid = 20000 - len(bad)
        proc = subprocess.Popen(_import_cmd(path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        _wait_state(proc, path + ".state", 3000, "kill -9")
        proc.kill()                                  # SIGKILL: no chance to tidy up
        proc.communicate()
        check(proc.returncode == -signal.SIGKILL, "exit %r after kill -9" % proc.returncode)
        check(os.path.exists(path + ".state"), "no state file after kill -9")

        p, s = run_import(path)
        check("resuming" in p.stderr, "the second run does not say it resumes: %s" % p.stderr)
        check(s and s["lines"] == 20000 and s["rejected"] == len(bad) and
              s["accepted"] + s["duplicate"] == valid and s["duplicate"] <= 1000,
              "resumed import: %r (valid %d)" % (s, valid))
        errs = read_errors(path + ".errors")
        check(sorted(errs) == bad, "errors file lines %r..., want %r..." % (sorted(errs)[:5], bad[:5]))
        check(all(v[0] == "malformed_json" for v in errs.values()), "error codes %r" % (
            set(v[0] for v in errs.values()),))
        for u in users:
            b = balance(u)
            check(b == want[u], "user %s: balance %s, want %d (an event applied twice or lost)" % (
                u, b, want[u]))

        p, s = run_import(path)
        expect_summary(s, "full re-run", lines=20000, accepted=0, duplicate=valid,
                       rejected=len(bad))
        check(sorted(read_errors(path + ".errors")) == bad, "errors file of the re-run")
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_import_sigint_finishes_the_batch_in_flight_and_resumes():
    d = _workdir()
    try:
        users = [uid("intu") for _ in range(5)]
        path, want, bad = _points_file(d, "int.ndjson", 6000, users, 1500)
        proc = subprocess.Popen(_import_cmd(path, "--batch", "500"), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        _wait_state(proc, path + ".state", 500, "SIGINT")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
        check(proc.returncode == 128 + signal.SIGINT, "exit %d after SIGINT: %s" % (proc.returncode, err))
        check("run the same command again" in err, "no hint how to go on: %s" % err)
        s1 = summary(out)
        check(s1 and 0 < s1["lines"] < 6000, "summary after SIGINT: %r" % (s1,))
        with open(path + ".state") as f:
            check("lines %d\n" % s1["lines"] in f.read(), "state file disagrees with the summary")

        p, s = run_import(path, "--batch", "500")
        # the batch in flight was answered before stopping: nothing is sent twice
        expect_summary(s, "resumed after SIGINT", lines=6000, accepted=6000 - len(bad),
                       duplicate=0, rejected=len(bad))
        check(sorted(read_errors(path + ".errors")) == bad, "errors file after SIGINT and resume")
        for u in users:
            check(balance(u) == want[u], "user %s: balance %s, want %d" % (u, balance(u), want[u]))
    finally:
        shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------- retries

class _Proxy(http.server.ThreadingHTTPServer):
    daemon_threads = True


def _proxy(script):
    """A local HTTP/1.1 proxy in front of the service. Each request takes the next action
    of script: "503" (answer 503 + Retry-After: 1), "drop" (close without an answer),
    "late" (forward, then answer after 7 s), "chunked" (forward, answer chunked),
    "close" (forward, answer with Connection: close), "item500" (forward, but answer
    internal_error for the first item), then "pass" (forward)."""
    log = []
    lock = threading.Lock()

    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with lock:
                action = script.pop(0) if script else "pass"
                ids = [it.get("externalEventId") for it in json.loads(body)["items"]]
                log.append((time.time(), action, ids))
            if action == "drop":
                self.close_connection = True
                return
            if action == "503":
                b = b'{"status":"error","error_code":"unavailable","message":"try later"}'
                self.send_response(503)
                self.send_header("Content-Type", "application/json")
                self.send_header("Retry-After", "1")
                self.send_header("Content-Length", str(len(b)))
                self.end_headers()
                self.wfile.write(b)
                return
            c = http.client.HTTPConnection(lib.HOST, lib.PORT, timeout=120)
            c.request("POST", self.path, body, {k: v for k, v in self.headers.items()
                                                if k.lower() in ("authorization", "content-type")})
            r = c.getresponse()
            data = r.read()
            c.close()
            if action == "item500":
                j = json.loads(data)
                j["results"][0] = {"status": "error", "error_code": "internal_error",
                                   "message": "this item could not be stored; retry it"}
                data = json.dumps(j).encode()
            try:
                if action == "late":
                    time.sleep(7)
                self.send_response(r.status)
                self.send_header("Content-Type", "application/json")
                if action == "chunked":
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for k in range(0, len(data), 777):
                        part = data[k:k + 777]
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                    self.wfile.write(b"0\r\n\r\n")
                    return
                if action == "close":
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:
                pass                                    # the client gave up on us

    srv = _Proxy(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, log


def test_import_retries_with_the_same_ids():
    d = _workdir()
    srv = None
    try:
        users = [uid("rtu") for _ in range(3)]
        path, want, bad = _points_file(d, "retry.ndjson", 3000, users, 10**9)
        srv, log = _proxy(["503", "pass", "drop", "late", "chunked", "close", "item500",
                           "chunked"])
        url = "http://127.0.0.1:%d" % srv.server_address[1]
        p, s = run_import(path, "--batch", "500", "--timeout", "3", url=url)
        # the late answer was applied but lost: its batch comes back as duplicates, and so
        # does the item answered internal_error (the proxy hid that it was stored)
        expect_summary(s, "import through the proxy", lines=3000, accepted=2499, duplicate=501,
                       rejected=0)
        check("HTTP 503" in p.stderr and "retrying" in p.stderr, "retries not reported: %s" % p.stderr)
        actions = [a for _, a, _ in log]
        check(actions == ["503", "pass", "drop", "late", "chunked", "close", "item500",
                          "chunked", "pass", "pass"], "requests seen: %r" % actions)
        # every retry carried exactly the ids of the request it repeats
        check(log[1][2] == log[0][2], "the retry after 503 changed the ids")
        check(log[1][0] - log[0][0] >= 0.95, "Retry-After: 1 not respected (%.2f s)" % (
            log[1][0] - log[0][0]))
        check(log[3][2] == log[2][2], "the retry after a dropped connection changed the ids")
        check(log[4][2] == log[3][2], "the retry after a timeout changed the ids")
        check(log[7][2] == log[6][2][:1], "only the item answered internal_error goes again: %r" % (
            log[7][2],))
        sent = [i for _, _, ids in log for i in ids]
        check(len(set(sent)) == 3000, "%d distinct ids sent, want 3000" % len(set(sent)))
        for u in users:
            check(balance(u) == want[u], "user %s: balance %s, want %d" % (u, balance(u), want[u]))
    finally:
        if srv is not None:
            srv.shutdown()
            srv.server_close()
        shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------- refusals

def test_import_refusals():
    d = _workdir()
    try:
        path = os.path.join(d, "few.ndjson")
        write_lines(path, [json.dumps(points_event(uid("ru"), uid("re"), "imp.ref"))])
        p, _ = run_import(path, key="rfk_not_a_key", expect=1)
        check("401" in p.stderr, "a bad key must be reported with its 401: %s" % p.stderr)
        p, _ = run_import(path, key=lib.reader(), expect=1)
        check("403" in p.stderr, "a key without events:write: %s" % p.stderr)
        p, _ = run_import(path, url="https://127.0.0.1:1", expect=2)
        check("https" in p.stderr, "https: %s" % p.stderr)
        p, _ = run_import(path, "--bogus", expect=2)
        csv = os.path.join(d, "few.csv")
        with open(csv, "w") as f:
            f.write("a,b\n1,2\n")
        p, _ = run_import(csv, "--map", "a=externalEventId,c=identity.email", expect=2)
        check('"c"' in p.stderr, "an unknown column must be named: %s" % p.stderr)
        p, _ = run_import(csv, "--map", "a=externalEventId,b=identity.email", expect=2)
        check("source" in p.stderr, "a missing source must be reported: %s" % p.stderr)
        p = subprocess.run([lib.RFEVENTS_BIN, "import", "--url", lib.BASE_URL, path],
                           capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, RFEVENTS_KEY=""))
        check(p.returncode == 2 and "RFEVENTS_KEY" in p.stderr, "no key: %d %s" % (
            p.returncode, p.stderr))
        # the key may come from the environment
        p = subprocess.run([lib.RFEVENTS_BIN, "import", "--url", lib.BASE_URL, path],
                           capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, RFEVENTS_KEY=lib.writer()))
        check(p.returncode == 0, "RFEVENTS_KEY: exit %d %s" % (p.returncode, p.stderr))
        expect_summary(summary(p.stdout), "key from the environment", lines=1, accepted=1)
    finally:
        shutil.rmtree(d, ignore_errors=True)
