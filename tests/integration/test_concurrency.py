"""At most once under concurrency (API.md §2.3): many clients sending the same
events at once, single and batch mixed."""
import random
import threading

from lib import (BATCH, EVENTS, admin, check, fail, fetch_event, purchase, request,
                 uid, writer)


def _outcomes(r, evs):
    """(externalEventId, status, event_id) per event of one response."""
    out = []
    if r.status in (200, 201) and r.is_json and "results" in r.body:
        res = r.body["results"]
        if len(res) != len(evs):
            return [(None, "bad-count", r.describe(300))]
        for ev, x in zip(evs, res):
            st = x.get("status")
            out.append((ev["externalEventId"], st,
                        x.get("event_id") if st == "accepted" else x.get("original_event_id") or x))
    elif r.status == 201 and r.is_json:
        out.append((evs[0]["externalEventId"], "accepted", r.body.get("event_id")))
    elif r.status == 200 and r.is_json and r.body.get("status") == "duplicate":
        out.append((evs[0]["externalEventId"], "duplicate", r.body.get("original_event_id")))
    else:
        out.append((evs[0]["externalEventId"], "HTTP %d" % r.status, r.describe(300)))
    return out


N = 50


def test_same_50_events_from_16_threads():
    """16 clients send the same 50 events at once, in their own orders, mixed
    between the single and the batch endpoint: each event accepted exactly
    once, every balance exact (acme: points = floor(amount))."""
    k = writer()
    users = [{"externalUserId": uid("cu")} for _ in range(5)]
    evs = [purchase(identity=users[i % 5], properties={
        "order_id": uid("o"), "amount": 10 + i, "currency": "USD"}) for i in range(N)]
    nthreads = 16
    barrier = threading.Barrier(nthreads)
    collected = [[] for _ in range(nthreads)]

    def worker(t):
        rnd = random.Random(t)
        order = evs[:]
        rnd.shuffle(order)
        barrier.wait()
        i = 0
        while i < len(order):
            n = rnd.choice((1, 1, 3, 7))
            chunk = order[i:i + n]
            i += n
            if n == 1 and rnd.random() < 0.8:
                r = request("POST", EVENTS, chunk[0], key=k)
            else:
                r = request("POST", BATCH, {"items": chunk}, key=k)
            collected[t].extend(_outcomes(r, chunk))
    threads = [threading.Thread(target=worker, args=(t,)) for t in range(nthreads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(240)
    allout = [o for c in collected for o in c]
    odd = [o for o in allout if o[1] not in ("accepted", "duplicate")]
    check(not odd, "%d answers neither accepted nor duplicate, first: %r" % (len(odd), odd[:5]))
    check(len(allout) == N * nthreads, "expected %d answers, got %d" % (N * nthreads, len(allout)))
    accepted = {}
    for eid, st, evt in allout:
        if st == "accepted":
            accepted.setdefault(eid, []).append(evt)
    multi = {e: v for e, v in accepted.items() if len(v) > 1}
    check(not multi, "events accepted more than once: %r" % list(multi.items())[:5])
    total = sum(len(v) for v in accepted.values())
    check(total == N, "expected exactly %d accepted in total, got %d" % (N, total))
    wrong = [(eid, evt) for eid, st, evt in allout
             if st == "duplicate" and evt != accepted.get(eid, [None])[0]]
    check(not wrong, "duplicates naming another original_event_id: %r" % wrong[:5])
    for ev in evs[:3]:
        doc = fetch_event(accepted[ev["externalEventId"]][0])
        check(doc.get("externalEventId") == ev["externalEventId"], "stored event differs: %r" % doc)
    for j, u in enumerate(users):
        want = sum(10 + i for i in range(N) if i % 5 == j)
        r = request("GET", "/v1/cdp/profiles?externalUserId=" + u["externalUserId"],
                    key=admin())
        bal = r.body.get("balances", {}).get("points", {}) if r.is_json else {}
        check(r.status == 200 and bal.get("balance") == want and bal.get("lifetime") == want,
              "user %d: balance %r, want %d: %s" % (j, bal, want, r.describe(200)))


def test_concurrent_conflicting_payloads():
    """The same id with two payloads raced by 10 threads: one accepted, the others
    duplicate of it or conflict with it."""
    k = writer()
    base = purchase()
    other = purchase(externalEventId=base["externalEventId"], identity=base["identity"])
    barrier = threading.Barrier(10)
    rs = [None] * 10

    def run(i):
        barrier.wait()
        rs[i] = request("POST", EVENTS, base if i % 2 else other, key=k)
    ts = [threading.Thread(target=run, args=(i,)) for i in range(10)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    acc = [r for r in rs if r.status == 201]
    check(len(acc) == 1, "expected exactly one 201, got %d: %s" % (
        len(acc), [r.describe(200) for r in rs]))
    orig = acc[0].body.get("event_id")
    for r in rs:
        if r is acc[0]:
            continue
        ok = (r.status == 200 and r.body.get("status") == "duplicate" and r.body.get("original_event_id") == orig) or \
             (r.status == 409 and r.body.get("error_code") == "conflict" and r.body.get("original_event_id") == orig)
        check(ok, "expected duplicate or conflict of %s, got %s" % (orig, r.describe()))


def _retries():
    """rfevents_txn_retries_total of this machine's workers (GET /metrics)."""
    r = request("GET", "/metrics", key=admin())
    check(r.status == 200, "GET /metrics: " + r.describe(200))
    for line in r.raw.decode("utf-8", "replace").splitlines():
        if line.startswith("rfevents_txn_retries_total "):
            return int(line.split()[1])
    fail("GET /metrics has no rfevents_txn_retries_total")


def test_same_key_from_many_users_raced():
    """Each of 12 ids is sent at once by 8 threads, each as its own new user.
    Different users lock different profiles, so nothing serialises the
    requests before their writes: the key may be read free by several of them
    and taken by one between another's read and its INSERT (the write
    statement then fails with 1062 and the transaction runs again). Per id:
    exactly one 201, the others 409 conflict naming it (their payloads
    differ: the identity); only the accepted user has the points."""
    k = writer()
    nkeys, nthreads = 12, 8
    keys = [uid("race") for _ in range(nkeys)]
    users = [[{"externalUserId": uid("ru")} for _ in range(nthreads)] for _ in keys]
    before = _retries()
    barrier = threading.Barrier(nthreads)
    rs = [[None] * nthreads for _ in keys]

    def run(t):
        for j, ext in enumerate(keys):
            ev = purchase(externalEventId=ext, identity=users[j][t],
                          properties={"order_id": ext, "amount": 40 + j, "currency": "USD"})
            try:
                barrier.wait(60)
            except threading.BrokenBarrierError:
                pass
            rs[j][t] = request("POST", EVENTS, ev, key=k)
    ts = [threading.Thread(target=run, args=(t,)) for t in range(nthreads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(240)
    for j, ext in enumerate(keys):
        acc = [t for t in range(nthreads) if rs[j][t] is not None and rs[j][t].status == 201]
        check(len(acc) == 1, "%s: expected exactly one 201, got %d: %s" % (
            ext, len(acc), [r.describe(150) if r else None for r in rs[j]]))
        orig = rs[j][acc[0]].body.get("event_id")
        for t in range(nthreads):
            r = rs[j][t]
            if t == acc[0]:
                continue
            check(r is not None and r.status == 409 and r.body.get("error_code") == "conflict"
                  and r.body.get("original_event_id") == orig,
                  "%s: expected conflict with %s, got %s" % (ext, orig, r.describe() if r else None))
        for t in range(nthreads):
            r = request("GET", "/v1/cdp/profiles?externalUserId=" + users[j][t]["externalUserId"],
                        key=admin())
            pts = (r.body.get("balances", {}).get("points", {}).get("balance", 0)
                   if r.status == 200 and r.is_json else 0)
            want = 40 + j if t == acc[0] else 0
            check(r.status in (200, 404) and pts == want,
                  "%s user %d: points %r, want %d: %s" % (ext, t, pts, want, r.describe(200)))
    print("  %d ids x %d users: transactions run again: %d" % (nkeys, nthreads, _retries() - before))


def _lock_tables_quickly(tables, timeout=3):
    """LOCK TABLES ... WRITE through the mariadb client with a lock wait of
    `timeout` seconds: it fails while any connection keeps a transaction
    open on one of them (a metadata lock). Returns (ok, message)."""
    import os
    import subprocess
    import urllib.parse
    u = urllib.parse.urlparse(os.environ["RFEVENTS_DB"])
    q = urllib.parse.parse_qs(u.query)
    args = ["mariadb", "--batch", "-u", urllib.parse.unquote(u.username or ""),
            u.path.lstrip("/")]
    if "socket" in q:
        args += ["--socket", q["socket"][0]]
    else:
        args += ["-h", u.hostname or "127.0.0.1", "-P", str(u.port or 3306)]
    sql = ("SET SESSION lock_wait_timeout = %d; LOCK TABLES %s; UNLOCK TABLES;"
           % (timeout, ", ".join("%s WRITE" % t for t in tables)))
    env = dict(os.environ, MYSQL_PWD=urllib.parse.unquote(u.password or ""))
    p = subprocess.run(args + ["-e", sql], capture_output=True, text=True, env=env,
                       timeout=timeout + 30)
    return p.returncode == 0, (p.stderr or p.stdout).strip()


def test_idle_workers_hold_no_table_locks():
    """The connection runs with autocommit off: a read outside a transaction
    (a duplicate's key, the GET endpoints) opens one. It must be ended once
    the answer has gone, or an idle worker would hold a metadata lock and a
    migration (ALTER TABLE) would wait for it."""
    k = writer()
    ev = purchase()
    r = request("POST", EVENTS, ev, key=k)
    check(r.status == 201, "accepted: %s" % r.describe(200))
    event_id = r.body.get("event_id")
    # duplicates (the second and later read the key before any transaction),
    # event and profile reads, a batch of duplicates only
    for _ in range(12):
        r = request("POST", EVENTS, ev, key=k)
        check(r.status == 200, "duplicate: %s" % r.describe(200))
        r = request("GET", "/v1/cdp/events/" + event_id, key=admin())
        check(r.status == 200, "event read: %s" % r.describe(200))
    r = request("POST", BATCH, {"items": [ev] * 20}, key=k)
    check(r.status == 200, "batch of duplicates: %s" % r.describe(200))
    ok, msg = _lock_tables_quickly(["events", "identities", "profiles", "balances",
                                    "api_keys", "tenants"])
    check(ok, "a worker keeps a transaction open between requests: %s" % msg)
