#!/usr/bin/env python3
"""Exactly once across a three-node Galera cluster (API.md §2.3, GALERA.md).

    python3 tests/cluster/test_cluster.py [FILTER ...]

Runs against what tests/cluster/run.sh starts: three database nodes, three web servers,
web server i preferring node i. Environment (set by run.sh):
  BASE_URLS          url1,url2,url3 of the three web servers (BASE_URL is url1)
  RFEVENTS_DB        mariadb://user:pass@h1:p1,h2:p2,h3:p3/db (the nodes, in order)
  RFEVENTS_BIN, RFEVENTS_CONF   for the CLI (keys)
  RFEVENTS_CLUSTER   tests/cluster.sh, with VAR, PORT, DB_PORT_BASE, GALERA_PORT_BASE
                     exported so that its kill-node and restart-node act on this cluster
  CLUSTER_THREADS    client threads (default 12)

Each node is also queried directly with the mariadb client (SET SESSION
wsrep_sync_wait=1 first, so a node answers only once it has applied everything the
cluster committed before). Prints "ok NAME" or "FAIL NAME: message" per test, figures
as "figure: ..." lines, and ends with "N passed, N failed"; exits 1 when anything failed.
"""
import collections
import http.client
import json
import os
import queue
import random
import re
import subprocess
import sys
import threading
import time
import traceback
import urllib.parse
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BASE_URLS = [u for u in os.environ.get("BASE_URLS", "").split(",") if u]
if BASE_URLS:
    os.environ.setdefault("BASE_URL", BASE_URLS[0])
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

import lib  # noqa: E402  (tests/integration/lib.py: keys, events, checks)
from lib import EVENTS, BATCH, Response, check, fail, make_key, summarise  # noqa: E402

THREADS = int(os.environ.get("CLUSTER_THREADS", "12"))
CLUSTER = os.environ.get("RFEVENTS_CLUSTER", os.path.join(ROOT, "tests", "cluster.sh"))
TENANT = "acme"
RETRYABLE = (0, 429, 500, 502, 503, 504)   # 0: no answer (connection refused/reset/timeout)
TIMEOUT = 60


def figure(text):
    print("figure: " + text, flush=True)


# ---------------------------------------------------------------- HTTP to one server

def request_to(server, method, path, body=None, key=None, timeout=TIMEOUT):
    """One request to web server `server` (0, 1, 2). Returns a lib.Response; status 0
    (with the exception text as body) when no HTTP answer came back."""
    u = urllib.parse.urlsplit(BASE_URLS[server])
    hdrs = {}
    if body is not None:
        body = json.dumps(body).encode("utf-8")
        hdrs["Content-Type"] = "application/json"
    if key is not None:
        hdrs["Authorization"] = "Bearer " + key
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        conn.request(method, u.path.rstrip("/") + path, body=body, headers=hdrs)
        resp = conn.getresponse()
        raw = resp.read()
        h = {n.lower(): v for n, v in resp.getheaders()}
        return Response(method, path, resp.status, h, raw)
    except (OSError, http.client.HTTPException) as exc:
        return Response(method, path, 0, {}, ("%s: %s" % (type(exc).__name__, exc)).encode())
    finally:
        conn.close()


def get_event_on(server, event_id, key):
    return request_to(server, "GET", EVENTS + "/" + urllib.parse.quote(event_id, safe=""),
                      key=key)


def profile_by_external_on(server, external_id, key):
    return request_to(server, "GET", "/v1/cdp/profiles?externalUserId=" +
                      urllib.parse.quote(external_id, safe=""), key=key)


_metrics_key = []


def app_retries():
    """rfevents_txn_retries_total summed over the three web servers (transactions the
    app ran again after a deadlock/certification failure, lock wait or node not ready);
    None when /metrics does not answer."""
    if not _metrics_key:
        _metrics_key.append(make_key(TENANT, "admin"))
        sync_all_nodes()
    total = 0
    for s in range(len(BASE_URLS)):
        r = request_to(s, "GET", "/metrics", key=_metrics_key[0])
        if r.status != 200:
            return None
        m = re.search(rb"^rfevents_txn_retries_total (\d+)", r.raw, re.M)
        if not m:
            return None
        total += int(m.group(1))
    return total


def retries_since(before):
    after = app_retries()
    if before is None or after is None:
        return "unknown (no /metrics)"
    return str(after - before)


# ---------------------------------------------------------------- the nodes, directly

def _parse_db_url(url):
    m = re.match(r"^mariadb://([^:@/]+):([^@/]*)@([^/]+)/([^?]+)", url or "")
    if not m:
        raise AssertionError("RFEVENTS_DB %r is not mariadb://user:pass@h:p,h:p,h:p/db" % url)
    user, pw, hosts, db = m.groups()
    nodes = []
    for hp in hosts.split(","):
        h, _, p = hp.partition(":")
        nodes.append((h, int(p or 3306)))
    return user, urllib.parse.unquote(pw), nodes, db


DB_USER, DB_PASS, NODES, DB_NAME = _parse_db_url(os.environ.get("RFEVENTS_DB", ""))


def node_sql(node, sql, timeout=120):
    """Run sql on node `node` (0, 1, 2) after SET SESSION wsrep_sync_wait=1; returns the
    rows of the last result as lists of strings."""
    host, port = NODES[node]
    env = dict(os.environ, MYSQL_PWD=DB_PASS)
    p = subprocess.run(
        ["mariadb", "--no-defaults", "-h", host, "-P", str(port), "-u", DB_USER,
         "--connect-timeout=5", "--batch", "--skip-column-names", DB_NAME,
         "-e", "SET SESSION wsrep_sync_wait = 1; " + sql],
        capture_output=True, text=True, timeout=timeout, env=env)
    if p.returncode != 0:
        raise AssertionError("node %d (%s:%d): %s" % (node + 1, host, port, p.stderr.strip()))
    return [ln.split("\t") for ln in p.stdout.splitlines()]


def sync_all_nodes():
    """Wait until every node has applied what the cluster committed (keys made by the
    CLI on node 1 included)."""
    for n in range(len(NODES)):
        node_sql(n, "SELECT 1")


def q(s):
    """A SQL string literal for the plain ids these tests make."""
    check(re.match(r"^[A-Za-z0-9_.:%-]*$", s) is not None, "unexpected characters in %r" % s)
    return "'" + s + "'"


def node_state(node, source, user_prefix):
    """Everything one node holds about the events of `source` and the profiles of the
    users whose externalUserId starts with user_prefix, in comparable form."""
    tenant = "(SELECT id FROM tenants WHERE slug = %s)" % q(TENANT)
    rows = node_sql(node, """
        SELECT COUNT(*), COUNT(DISTINCT external_event_id), COUNT(DISTINCT profile_id),
               COALESCE(BIT_XOR(CRC32(CONCAT_WS('|', public_id, external_event_id,
                   HEX(fingerprint), profile_id, MD5(outcome)))), 0)
          FROM events WHERE tenant_id = %s AND source = %s""" % (tenant, q(source)))
    ev_count, ev_distinct, ev_profiles, ev_sum = rows[0]
    ids = node_sql(node, "SELECT external_event_id FROM events WHERE tenant_id = %s AND "
                   "source = %s" % (tenant, q(source)))
    profiles = """(SELECT profile_id FROM identities WHERE tenant_id = %s AND type = 0
                    AND value LIKE %s)""" % (tenant, q(user_prefix + "%"))
    bal = node_sql(node, """
        SELECT i.value, COALESCE(b.balance, 0), COALESCE(b.lifetime, 0),
               COALESCE(l.s, 0), COALESCE(l.n, 0)
          FROM identities i
          LEFT JOIN balances b ON b.profile_id = i.profile_id AND b.name = 'points'
          LEFT JOIN (SELECT profile_id, SUM(delta) s, COUNT(*) n FROM ledger
                      WHERE balance_name = 'points' GROUP BY profile_id) l
                 ON l.profile_id = i.profile_id
         WHERE i.tenant_id = %s AND i.type = 0 AND i.value LIKE %s""" % (
        tenant, q(user_prefix + "%")))
    led = node_sql(node, """
        SELECT COUNT(*), COALESCE(SUM(delta), 0),
               COALESCE(BIT_XOR(CRC32(CONCAT_WS('|', e.public_id, l.seq, l.rule_id,
                   l.balance_name, l.delta, l.balance_after))), 0)
          FROM ledger l JOIN events e ON e.id = l.event_id
         WHERE l.profile_id IN %s""" % profiles)
    return {
        "events": int(ev_count), "distinct_ids": int(ev_distinct),
        "profiles_of_events": int(ev_profiles), "events_checksum": ev_sum,
        "ids": sorted(r[0] for r in ids),
        "balances": {r[0]: (int(r[1]), int(r[2]), int(r[3]), int(r[4])) for r in bal},
        "ledger": (int(led[0][0]), int(led[0][1]), led[0][2]),
    }


def attempt(failures, fn, *args):
    """Run one check; collect its failure instead of stopping at it."""
    try:
        fn(*args)
    except AssertionError as exc:
        failures.append(str(exc))


def lost_update_evidence(node, user):
    """Ledger rows of user's profile that start from the same balance (balance_after -
    delta): two events that each read the same balance and wrote their own sum."""
    rows = node_sql(node, """
        SELECT l.balance_after - l.delta, e.public_id, e.external_event_id, e.request_id,
               l.delta, l.balance_after
          FROM ledger l JOIN events e ON e.id = l.event_id
          JOIN identities i ON i.profile_id = l.profile_id AND i.type = 0
         WHERE i.value = %s AND l.balance_name = 'points'""" % q(user))
    by_start = collections.defaultdict(list)
    for r in rows:
        by_start[int(r[0])].append(r)
    same = [v for k, v in sorted(by_start.items()) if len(v) > 1]
    if not same:
        return ""
    return "; e.g. both %s" % " and ".join(
        "%s (%s, request %s: %s%+d = %s)" % (r[1], r[2], r[3], r[0], int(r[4]), r[5])
        for r in same[0])


def check_nodes(source, user_prefix, expected, what):
    """expected: {externalUserId: points} and every event id of source. Checks each node
    against it and the nodes against each other; returns the per-node states."""
    problems = []
    states = [node_state(n, source, user_prefix) for n in range(len(NODES))]
    total = sum(expected["points"].values())
    for n, st in enumerate(states):
        name = "node %d" % (n + 1)
        want_ids = sorted(expected["ids"])
        if st["ids"] != want_ids:
            missing = sorted(set(want_ids) - set(st["ids"]))
            extra = sorted(set(st["ids"]) - set(want_ids))
            problems.append("%s: %d events of %s missing (first %s), %d unexpected" % (
                name, len(missing), source, missing[:3], len(extra)))
        if st["events"] != st["distinct_ids"]:
            problems.append("%s: %d event rows for %d ids" % (name, st["events"], st["distinct_ids"]))
        if st["profiles_of_events"] != len(expected["points"]):
            problems.append("%s: the events belong to %d profiles, expected %d (one per user)" % (
                name, st["profiles_of_events"], len(expected["points"])))
        if set(st["balances"]) != set(expected["points"]):
            problems.append("%s: %d users have an EXTERNAL identity, expected %d" % (
                name, len(st["balances"]), len(expected["points"])))
        for user, pts in sorted(expected["points"].items()):
            got = st["balances"].get(user)
            if got is None:
                continue
            bal, life, lsum, _ = got
            if (bal, life, lsum) != (pts, pts, pts):
                problems.append("%s: user %s: balance %d, lifetime %d, ledger sum %d; "
                                "expected %d%s" % (
                                    name, user, bal, life, lsum, pts,
                                    lost_update_evidence(n, user) if lsum != bal else ""))
        if st["ledger"][1] != total:
            problems.append("%s: ledger deltas sum to %d, expected %d" % (name, st["ledger"][1], total))
    for n in range(1, len(states)):
        for k in ("events", "events_checksum", "ids", "balances", "ledger"):
            if states[n][k] != states[0][k]:
                a, b = states[0][k], states[n][k]
                if k in ("ids", "balances"):
                    a, b = "%d entries" % len(a), "%d entries (differ)" % len(b)
                problems.append("node %d and node 1 differ in %s: %s vs %s" % (n + 1, k, b, a))
    if problems:
        head = "\n  ".join(problems[:12])
        more = "" if len(problems) <= 12 else "\n  ... and %d more" % (len(problems) - 12)
        fail("%d problems on the database nodes %s:\n  %s%s" % (len(problems), what, head, more))
    return states


# ---------------------------------------------------------------- clients

class Tally:
    """Answers per event and retries, shared by the client threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.accepted = collections.defaultdict(list)    # ext id -> [event_id, ...]
        self.originals = collections.defaultdict(set)    # ext id -> {original_event_id}
        self.answers = collections.defaultdict(list)     # ext id -> [(server, status, rid)]
        self.acked = {}                                   # ext id -> first ack time
        self.uncertain = set()      # ext ids with a request whose outcome is unknown
        self.retries = collections.Counter()              # status -> count
        self.problems = []
        self.requests = 0
        self.items_sent = 0
        self.max_latency = 0.0
        self.failures = []          # (time, server, status) of retryable answers
        self.successes = []         # (time, server) of successful answers

    def note_retry(self, server, status, evs):
        with self.lock:
            self.retries[status] += 1
            self.failures.append((time.time(), server, status))
            for ev in evs:
                self.uncertain.add(ev["externalEventId"])

    def note(self, ext, status, evt, server, rid):
        with self.lock:
            self.acked.setdefault(ext, time.time())
            self.answers[ext].append((server + 1, status, rid))
            if status == "accepted":
                self.accepted[ext].append(evt)
            else:
                self.originals[ext].add(evt)


def send_until_answered(tally, server, evs, key, single, deadline):
    """POST evs (one event alone, or a batch) to `server` until the answer is final,
    retrying with the same ids on 5xx and on no answer. Records the outcome per event."""
    attempt = 0
    while True:
        attempt += 1
        t0 = time.time()
        if single:
            r = request_to(server, "POST", EVENTS, evs[0], key=key)
        else:
            r = request_to(server, "POST", BATCH, {"items": evs}, key=key)
        dt = time.time() - t0
        with tally.lock:
            tally.requests += 1
            tally.items_sent += len(evs)
            tally.max_latency = max(tally.max_latency, dt)
        if r.status in RETRYABLE:
            tally.note_retry(server, r.status, evs)
            if time.time() > deadline:
                with tally.lock:
                    tally.problems.append("gave up on server %d after %d attempts: %s" % (
                        server + 1, attempt, r.describe(200)))
                return
            time.sleep(min(2.0, 0.1 * attempt) * (0.5 + random.random()))
            continue
        with tally.lock:
            tally.successes.append((time.time(), server))
        results = None
        if single:
            if r.status == 201 and r.is_json and r.body.get("status") == "accepted":
                results = [r.body]
            elif r.status == 200 and r.is_json and r.body.get("status") == "duplicate":
                results = [r.body]
        elif r.status == 200 and r.is_json and isinstance(r.body.get("results"), list) \
                and len(r.body["results"]) == len(evs):
            results = r.body["results"]
        if results is None:
            with tally.lock:
                tally.problems.append("server %d: %s" % (server + 1, r.describe(300)))
            return
        for ev, res in zip(evs, results):
            ext = ev["externalEventId"]
            st = res.get("status") if isinstance(res, dict) else None
            rid = r.headers.get("x-request-id")
            if st == "accepted":
                tally.note(ext, st, res.get("event_id"), server, rid)
            elif st == "duplicate":
                tally.note(ext, st, res.get("original_event_id"), server, rid)
            else:
                with tally.lock:
                    tally.problems.append("server %d: %s: item %s: %r" % (
                        server + 1, "single" if single else "batch", ext, res))
        return


def stored_request_id(source, ext):
    rows = node_sql(0, "SELECT request_id FROM events WHERE source = %s AND "
                    "external_event_id = %s" % (q(source), q(ext)))
    return rows[0][0] if rows else None


def check_tally(tally, all_ids, what, source):
    """Every event acknowledged; none accepted twice; duplicates name the original."""
    problems = list(tally.problems)
    for ext in all_ids:
        acc = tally.accepted.get(ext, [])
        origs = tally.originals.get(ext, set())
        if ext not in tally.acked:
            problems.append("%s was never acknowledged" % ext)
        if len(acc) > 1:
            problems.append("%s accepted %d times: %s" % (ext, len(acc), acc))
        if not acc and ext not in tally.uncertain and ext in tally.acked:
            # Every request for it was answered, so one of them made it: that one must
            # say "accepted" (201), not "duplicate" of the event it created itself.
            answers = tally.answers.get(ext) or []
            rid = stored_request_id(source, ext)
            own = [a for a in answers if a[2] == rid]
            problems.append("%s: every request was answered but none said accepted: %s "
                            "(server, status, X-Request-Id): %s; the event row holds "
                            "request_id %s%s" % (
                                ext, sorted(origs), answers, rid,
                                " -- the very request that answered \"duplicate\" created "
                                "the event" if own else ""))
        ids = set(acc) | origs
        if len(ids) > 1:
            problems.append("%s: answers name different events: %s" % (ext, sorted(ids)))
    summarise(problems, len(all_ids), "events went wrong (%s)" % what)


def new_users(prefix, n):
    return ["%s%02d" % (prefix, i) for i in range(n)]


def make_event(source, user, amount, tag):
    return {
        "source": source,
        "externalEventId": "%s-%s" % (tag, uuid.uuid4().hex[:16]),
        "eventType": "purchase_completed",
        "occurredAt": "2026-05-20T12:45:00Z",
        "identity": {"externalUserId": user},
        "properties": {"order_id": uuid.uuid4().hex[:20], "amount": amount,
                       "currency": "USD"},
    }


def points_of(amount):
    # acme: points_per_dollar = amount * 1, rounding floor; every user stays below the
    # silver tier (1000 lifetime), whose multiplier the rule does not use anyway.
    return int(amount)


def run_id():
    return uuid.uuid4().hex[:8]


def cluster(*args, timeout=300):
    p = subprocess.run([CLUSTER] + list(args), capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise AssertionError("%s %s: exit %d: %s" % (
            os.path.basename(CLUSTER), " ".join(args), p.returncode,
            (p.stdout + p.stderr).strip()[-1500:]))
    return p.stdout + p.stderr


# ---------------------------------------------------------------- (a) exactly once

def test_1_same_events_through_all_servers():
    """200 events, each sent to 2 or 3 different web servers by 12+ threads, single
    and batch mixed: each applied exactly once, the same on every node."""
    rid = run_id()
    source = "cl.a." + rid
    prefix = "cla-%s-u" % rid
    # Few users, so that one profile's events often commit on different nodes at once.
    users = new_users(prefix, 8)
    rnd = random.Random(rid)
    evs = []
    for i in range(200):
        amount = rnd.randint(100, 3999) / 100      # 25 events per user: < 1000 points
        evs.append(make_event(source, users[i % len(users)], amount, "a%03d" % i))
    expected = collections.Counter()
    for ev in evs:
        expected[ev["identity"]["externalUserId"]] += points_of(ev["properties"]["amount"])
    key = make_key(TENANT, "events:write")
    sync_all_nodes()

    # Each server gets its share of the events in nearly the same order, so that the
    # copies of one event are in flight on different servers at about the same time.
    order = list(range(len(evs)))
    rnd.shuffle(order)
    pos = {e: p for p, e in enumerate(order)}
    per_server = [[] for _ in BASE_URLS]
    for e in order:
        for s in rnd.sample(range(len(BASE_URLS)), rnd.choice((2, 2, 3))):
            per_server[s].append(e)
    jobs = []
    for s, lst in enumerate(per_server):
        i = 0
        while i < len(lst):
            n = rnd.choice((1, 1, 1, 2, 4, 8))
            chunk = lst[i:i + n]
            i += n
            single = len(chunk) == 1 and rnd.random() < 0.85
            jobs.append((pos[chunk[0]] + rnd.random() * 6, s, [evs[e] for e in chunk], single))
    jobs.sort(key=lambda j: j[0])
    work = queue.Queue()
    for j in jobs:
        work.put(j)

    tally = Tally()
    deadline = time.time() + 180
    barrier = threading.Barrier(THREADS)

    def worker():
        barrier.wait()
        while True:
            try:
                _, s, chunk, single = work.get_nowait()
            except queue.Empty:
                return
            send_until_answered(tally, s, chunk, key, single, deadline)

    before = app_retries()
    t0 = time.time()
    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    elapsed = time.time() - t0
    retried = sum(tally.retries.values())
    figure("(a) %d events, %d copies in %d requests (%d single, %d batch) through %d servers "
           "from %d threads in %.1f s; client retries %d (%s); transactions the app retried "
           "(certification conflicts, deadlocks) %s; max latency %.2f s" % (
               len(evs), tally.items_sent, tally.requests,
               sum(1 for j in jobs if j[3]), sum(1 for j in jobs if not j[3]),
               len(BASE_URLS), THREADS, elapsed, retried,
               ", ".join("HTTP %s: %d" % kv for kv in sorted(tally.retries.items())) or "none",
               retries_since(before), tally.max_latency))
    all_ids = [ev["externalEventId"] for ev in evs]
    failures = []
    attempt(failures, check_tally, tally, all_ids, "(a)", source)
    accepted = sum(len(v) for v in tally.accepted.values())
    attempt(failures, check, accepted == len(evs) or tally.uncertain,
            "expected %d accepted answers in total, got %d" % (len(evs), accepted))

    attempt(failures, check_nodes, source, prefix,
            {"points": dict(expected), "ids": all_ids}, "(a)")
    st = node_state(0, source, prefix)
    figure("(a) node 1: %d events, sum of balances %d (expected %d), ledger %d rows summing "
           "to %d, checksum %s" % (
               st["events"], sum(b[0] for b in st["balances"].values()),
               sum(expected.values()), st["ledger"][0], st["ledger"][1], st["ledger"][2]))

    # The API agrees on every server.
    reader = make_key(TENANT, "profiles:read")
    sync_all_nodes()
    problems = []
    for i, user in enumerate(users):
        s = i % len(BASE_URLS)
        r = profile_by_external_on(s, user, reader)
        bal = None
        if r.status == 200 and r.is_json:
            bal = ((r.body.get("balances") or {}).get("points") or {}).get("balance")
        if bal != expected[user]:
            problems.append("GET profile of %s via server %d: expected balance %d, got %s" % (
                user, s + 1, expected[user], r.describe(200)))
    attempt(failures, summarise, problems, len(users),
            "profiles read through the web servers are wrong")
    if failures:
        fail("\n".join(failures))


# ---------------------------------------------------------------- (c) read your writes

def test_2_reads_through_any_server_see_acknowledged_writes():
    """Write through one server, read the event (and the profile) through the two
    others immediately: always found. Also a key made on node 1 (the CLI) works on
    every server at once."""
    rid = run_id()
    source = "cl.c." + rid
    problems = []
    stale = 0
    reads = 0

    # A fresh key, used at once through servers 3, 2 and 1 (the CLI wrote it to node 1).
    key_401 = 0
    for _ in range(10):
        k = make_key(TENANT, "admin")
        for s in reversed(range(len(BASE_URLS))):
            r = request_to(s, "GET", "/v1/cdp/event-types", key=k)
            if r.status != 200:
                key_401 += 1
                problems.append("key created by the CLI (node 1), GET /v1/cdp/event-types via "
                                "server %d at once: expected 200, got %s" % (s + 1, r.describe(200)))

    key = make_key(TENANT, "admin")
    sync_all_nodes()
    n = 60
    for i in range(n):
        w = i % len(BASE_URLS)
        user = "clc-%s-u%02d" % (rid, i % 7)
        ev = make_event(source, user, 10 + i % 5, "c%03d" % i)
        for _ in range(20):
            r = request_to(w, "POST", EVENTS, ev, key=key)
            if r.status not in RETRYABLE:
                break
            time.sleep(0.3)
        if r.status != 201 or not r.is_json:
            problems.append("POST via server %d: expected 201, got %s" % (w + 1, r.describe(200)))
            continue
        evt = r.body.get("event_id")
        for s in range(len(BASE_URLS)):
            if s == w:
                continue
            g = get_event_on(s, evt, key)
            reads += 1
            if g.status != 200:
                stale += 1
                problems.append("POST %s via server %d -> 201 %s; GET /v1/cdp/events/%s via "
                                "server %d at once: expected 200, got %s" % (
                                    ev["externalEventId"], w + 1, evt, evt, s + 1,
                                    g.describe(200)))
            p = profile_by_external_on(s, user, key)
            reads += 1
            if p.status != 200:
                stale += 1
                problems.append("profile of %s via server %d after a write via %d: got %s" % (
                    user, s + 1, w + 1, p.describe(200)))
    figure("(c) %d writes, %d immediate reads through the other servers: %d stale; "
           "fresh keys refused by another server: %d of %d" % (
               n, reads, stale, key_401, 10 * len(BASE_URLS)))
    summarise(problems, n, "reads after writes went wrong")


# ---------------------------------------------------------------- (b) a node killed

def test_3_node_killed_under_load():
    """kill -9 of node 2 while 12 threads send events through all three servers, then
    its restart (IST): nothing acknowledged is lost, everything is applied once, and
    every node ends up the same."""
    rid = run_id()
    source = "cl.b." + rid
    prefix = "clb-%s-u" % rid
    users = new_users(prefix, 100)
    victim = 2
    key = make_key(TENANT, "events:write")
    sync_all_nodes()

    tally = Tally()
    sent = []                 # every event handed to a client thread, in order
    sent_lock = threading.Lock()
    stop = threading.Event()
    rnd_lock = threading.Lock()
    rnd = random.Random(rid)
    counter = [0]
    per_user = collections.Counter()
    deadline = time.time() + 240

    open_users = list(users)

    def next_events():
        with rnd_lock:
            n = rnd.choice((1, 1, 1, 3, 5))
            out = []
            for _ in range(n):
                # At most 100 events per user, amounts below 10: lifetime < 1000 (bronze).
                if not open_users:
                    break
                user = rnd.choice(open_users)
                per_user[user] += 1
                if per_user[user] == 100:
                    open_users.remove(user)
                counter[0] += 1
                out.append(make_event(source, user, rnd.randint(100, 999) / 100,
                                      "b%05d" % counter[0]))
            servers = rnd.sample(range(len(BASE_URLS)), rnd.choice((1, 2)))
            single = n == 1 and rnd.random() < 0.8
        with sent_lock:
            sent.extend(out)
        return out, servers, single

    def worker():
        while not stop.is_set() and time.time() < deadline:
            evs, servers, single = next_events()
            if not evs:
                return
            single = single and len(evs) == 1
            for s in servers:
                send_until_answered(tally, s, evs, key, single, deadline)
            time.sleep(0.02)

    before = app_retries()
    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    t_start = time.time()
    for t in threads:
        t.start()
    try:
        time.sleep(4)
        with tally.lock:
            acked_before = set(tally.acked)
        t_kill = time.time()
        cluster("kill-node", str(victim))
        out = cluster("restart-node", str(victim))
        t_synced = time.time()
        with tally.lock:
            acked_during = set(tally.acked) - acked_before
        time.sleep(4)          # load on the recovered cluster
    finally:
        stop.set()
        for t in threads:
            t.join(300)
    alive = [t for t in threads if t.is_alive()]
    check(not alive, "%d client threads still running" % len(alive))
    t_end = time.time()
    m = re.search(r"RESTART_SECONDS=([0-9.]+)", out)
    restart_s = float(m.group(1)) if m else -1
    how = "IST" if "by IST" in out else ("SST" if "by SST" in out else "?")
    w = re.search(r"waited ([0-9.]+) s until node", out)
    evict_s = float(w.group(1)) if w else 0.0

    # The longest time each server gave no successful answer, from the kill on (the
    # survivors stall commits until the dead node is evicted).
    pause = {}
    for srv in range(len(BASE_URLS)):
        times = [t_kill] + sorted(ts for ts, s in tally.successes
                                  if s == srv and ts >= t_kill) + [t_end]
        pause[srv] = max(b - a for a, b in zip(times, times[1:]))
    fails_after_kill = [f for f in tally.failures if f[0] >= t_kill]
    last_fail = max((f[0] for f in fails_after_kill), default=t_kill) - t_kill
    all_ids = [ev["externalEventId"] for ev in sent]
    expected = collections.Counter()
    for ev in sent:
        expected[ev["identity"]["externalUserId"]] += points_of(ev["properties"]["amount"])
    # Users that were never picked have no profile: only the picked ones are expected.
    states = [node_state(n, source, prefix) for n in range(len(NODES))]
    lost = {}
    for n, st in enumerate(states):
        have = set(st["ids"])
        lost[n] = sorted(e for e in tally.acked if e not in have)
    nlost = len(set().union(*lost.values()))
    figure("(b) %d events (%d requests, %d event copies) in %.1f s; killed node %d %.1f s "
           "into the load (%d events acknowledged before, %d while it was down or rejoining)" % (
               len(sent), tally.requests, tally.items_sent, t_end - t_start, victim,
               t_kill - t_start, len(acked_before), len(acked_during)))
    figure("(b) nodes killed: 1; node %d evicted by the others %.1f s after the kill; restart "
           "to Synced %.1f s (by %s); kill to Synced %.1f s" % (
               victim, evict_s, restart_s, how, t_synced - t_kill))
    figure("(b) transactions the app retried (certification conflicts, deadlocks, node not "
           "ready): %s" % retries_since(before))
    figure("(b) client retries %d (%s)%s; longest time without a successful answer after "
           "the kill: %s; max latency %.2f s" % (
               sum(tally.retries.values()),
               ", ".join("HTTP %s: %d" % kv for kv in sorted(tally.retries.items())) or "none",
               "; last failed answer %.1f s after the kill" % last_fail if fails_after_kill else "",
               ", ".join("server %d %.1f s" % (s + 1, pause[s]) for s in sorted(pause)),
               tally.max_latency))
    figure("(b) acknowledged events lost: %d" % nlost)
    problems = []
    for n in range(len(NODES)):
        if lost[n]:
            problems.append("node %d lacks %d acknowledged events, first %s" % (
                n + 1, len(lost[n]), lost[n][:3]))
    failures = []
    attempt(failures, summarise, problems, len(tally.acked), "acknowledged events lost")
    attempt(failures, check_tally, tally, all_ids, "(b)", source)
    attempt(failures, check_nodes, source, prefix,
            {"points": dict(expected), "ids": all_ids}, "(b)")
    st = cluster("status")
    attempt(failures, check, st.count("Synced") == 3,
            "not every node is Synced after the test:\n" + st)
    if failures:
        fail("\n".join(failures))


# ---------------------------------------------------------------- runner

def message(exc):
    if isinstance(exc, AssertionError) and str(exc):
        text = str(exc)
    else:
        tb = traceback.extract_tb(exc.__traceback__)
        where = ""
        for f in reversed(tb):
            if f.filename == os.path.abspath(__file__) or f.filename.startswith(HERE):
                where = " (at %s:%d)" % (os.path.basename(f.filename), f.lineno)
                break
        text = "%s: %s%s" % (type(exc).__name__, exc, where)
    return text.replace("\n", "\n    ")


def main(argv):
    filters = argv[1:]
    check(len(BASE_URLS) == 3, "BASE_URLS must list three web servers, got %r" % BASE_URLS)
    check(len(NODES) == 3, "RFEVENTS_DB must list three nodes, got %r" % NODES)
    tests = sorted((n, f) for n, f in globals().items()
                   if n.startswith("test_") and callable(f))
    passed = failed = 0
    started = time.time()
    for name, fn in tests:
        if filters and not any(f in name for f in filters):
            continue
        t0 = time.time()
        try:
            fn()
        except Exception as exc:
            failed += 1
            print("FAIL %s: %s" % (name, message(exc)), flush=True)
        else:
            passed += 1
            print("ok %s (%.1f s)" % (name, time.time() - t0), flush=True)
    sys.stderr.write("cluster suite: %.1f s\n" % (time.time() - started))
    sys.stderr.flush()
    print("%d passed, %d failed" % (passed, failed), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
