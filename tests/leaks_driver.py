#!/usr/bin/env python3
"""FastCGI client for tests/leaks.sh: talks the FastCGI protocol (responder role)
straight to one rfevents.fcgi worker on a unix socket and sends it a fixed mix of
requests, so that every path of the app runs many times under valgrind.

    python3 tests/leaks_driver.py SOCKET REQUESTS ADMIN_KEY OTHER_TENANT_KEY WRITE_ONLY_KEY

(the keys: an admin key of tenant acme, a key of another tenant, an acme key with
events:write only).

The mix, in cycles of 23 requests: accepted single events, duplicates, conflicts,
batches of 10 (with an in-batch duplicate and a bad item), dry runs, validation
errors, malformed JSON, unknown event types, 401s (missing, unknown key), 403,
404s, 405, 413, 415, GET event, GET profile (by id and by identity), history,
ledger (with a cursor), event types, metrics, health, and four single events
sent at once (served together). Prints the count per status
and exits 1 when an answer was a 5xx or not what the mix expects. Standard library
only."""
import json
import socket
import struct
import sys
import time
import uuid

BEGIN, END, PARAMS, STDIN, STDOUT, STDERR = 1, 3, 4, 5, 6, 7


def _nv(name, value):
    out = b""
    for x in (name, value):
        n = len(x)
        out += bytes([n]) if n < 128 else struct.pack(">I", n | 0x80000000)
    return out + name + value


def _record(rtype, content, rid=1):
    pad = (8 - len(content) % 8) % 8
    return struct.pack(">BBHHBB", 1, rtype, rid, len(content), pad, 0) + content + b"\0" * pad


def _stream(rtype, data):
    out = b""
    for i in range(0, len(data), 65535):
        out += _record(rtype, data[i:i + 65535])
    return out + _record(rtype, b"")


def request_bytes(method, uri, body=b"", headers=None):
    """The FastCGI records of one request (responder role, request id 1)."""
    path, _, query = uri.partition("?")
    env = {"REQUEST_METHOD": method, "REQUEST_URI": uri, "QUERY_STRING": query,
           "SCRIPT_NAME": "", "PATH_INFO": path, "SERVER_PROTOCOL": "HTTP/1.1",
           "GATEWAY_INTERFACE": "CGI/1.1", "REMOTE_ADDR": "127.0.0.1",
           "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80"}
    if body or method == "POST":
        env["CONTENT_LENGTH"] = str(len(body))
    for k, v in (headers or {}).items():
        if k.lower() == "content-type":
            env["CONTENT_TYPE"] = v
        else:
            env["HTTP_" + k.upper().replace("-", "_")] = v
    params = b"".join(_nv(k.encode(), v.encode("latin-1")) for k, v in env.items())
    return (_record(BEGIN, struct.pack(">HB5x", 1, 0)) + _stream(PARAMS, params) +
            _stream(STDIN, body))


def read_answer(s):
    """Read one answer from connected socket s: (status, headers dict, body bytes)."""
    buf, out = b"", b""
    while True:
        while len(buf) < 8:
            d = s.recv(65536)
            if not d:
                raise EOFError("the worker closed the connection")
            buf += d
        _v, rtype, _rid, clen, plen, _r = struct.unpack(">BBHHBB", buf[:8])
        while len(buf) < 8 + clen + plen:
            d = s.recv(65536)
            if not d:
                raise EOFError("the worker closed the connection mid-record")
            buf += d
        content = buf[8:8 + clen]
        buf = buf[8 + clen + plen:]
        if rtype == STDOUT:
            out += content
        elif rtype == END:
            break
    head, _, rbody = out.partition(b"\r\n\r\n")
    hdrs = {}
    for ln in head.decode("latin-1").split("\r\n"):
        k, _, v = ln.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    status = int(hdrs.get("status", "200").split()[0])
    return status, hdrs, rbody


def fcgi(sock_path, method, uri, body=b"", headers=None):
    """One request; returns (status, headers dict, body bytes)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(120)
    s.connect(sock_path)
    try:
        s.sendall(request_bytes(method, uri, body, headers))
        return read_answer(s)
    finally:
        s.close()


def uid(p):
    return "%s-%s" % (p, uuid.uuid4().hex)


def purchase(user=None, amount=12.5, ext=None):
    return {"source": "leak.test", "externalEventId": ext or uid("e"),
            "eventType": "purchase_completed",
            "identity": {"externalUserId": user or uid("u"), "email": uid("m") + "@x.example"},
            "properties": {"order_id": uid("o")[:30], "amount": amount, "currency": "USD"}}


def main(argv):
    sock, total, key, other, write_only = argv[1], int(argv[2]), argv[3], argv[4], argv[5]
    auth = {"Authorization": "Bearer " + key}
    jct = {"Content-Type": "application/json"}
    both = dict(auth, **jct)
    counts, bad = {}, []
    state = {"evt": None, "prf": None, "user": None, "cursor": None, "ev": None}
    sent = [0]

    def send(label, method, uri, body=None, headers=both, want=None):
        if sent[0] >= total:
            return None
        data = body if isinstance(body, bytes) else (
            json.dumps(body).encode() if body is not None else b"")
        st, h, rb = fcgi(sock, method, uri, data, headers)
        sent[0] += 1
        counts[st] = counts.get(st, 0) + 1
        if st >= 500 or (want is not None and st not in want):
            bad.append("%s: %s %s -> %d %s" % (label, method, uri[:60], st, rb[:200]))
        try:
            return json.loads(rb)
        except ValueError:
            return None

    def burst(label, bodies, wants):
        """Single events sent at once, all queued before the first answer is
        read: the worker takes them as one group (fcgi_handle_many())."""
        socks = []
        for body in bodies[:max(0, total - sent[0])]:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(120)
            s.connect(sock)
            s.sendall(request_bytes("POST", "/v1/cdp/events", json.dumps(body).encode(), both))
            socks.append(s)
        for s, want in zip(socks, wants):
            try:
                st, _h, rb = read_answer(s)
            finally:
                s.close()
            sent[0] += 1
            counts[st] = counts.get(st, 0) + 1
            if st not in want:
                bad.append("%s: -> %d %s" % (label, st, rb[:200]))

    t0 = time.time()
    cycle = 0
    while sent[0] < total:
        cycle += 1
        user = uid("lu")
        ev = purchase(user, amount=cycle % 300 + 0.5)
        b = send("accepted", "POST", "/v1/cdp/events", ev, want=(201,))
        if b and b.get("event_id"):
            state.update(evt=b["event_id"], prf=b["profile_id"], user=user, ev=ev)
        send("duplicate", "POST", "/v1/cdp/events", ev, want=(200,))
        conflict = dict(ev, properties=dict(ev["properties"], amount=1))
        send("conflict", "POST", "/v1/cdp/events", conflict, want=(409,))
        items = [purchase(user if i % 3 == 0 else None, amount=i) for i in range(8)]
        items.append(items[0])                                   # in-batch duplicate
        items.append({"source": "leak.test", "eventType": "purchase_completed"})  # bad item
        send("batch", "POST", "/v1/cdp/events/batch", {"items": items}, want=(200,))
        send("dry run", "POST", "/v1/cdp/events?dry_run=true", purchase(user), want=(200,))
        send("validation", "POST", "/v1/cdp/events",
             dict(purchase(), properties={"amount": -1, "currency": "XXX", "x": [1]}), want=(422,))
        send("malformed", "POST", "/v1/cdp/events", b'{"source": "x", "a": [1, 2', want=(400,))
        send("unknown type", "POST", "/v1/cdp/events", dict(purchase(), eventType="nope"), want=(422,))
        send("no key", "POST", "/v1/cdp/events", purchase(), headers=jct, want=(401,))
        send("unknown key", "GET", "/v1/cdp/events/" + (state["evt"] or "evt_x"),
             headers={"Authorization": "Bearer rfe_zzzzzzzz_" + "z" * 40}, want=(401,))
        send("GET event", "GET", "/v1/cdp/events/" + (state["evt"] or "evt_x"), want=(200,))
        send("GET profile", "GET", "/v1/cdp/profiles/" + (state["prf"] or "prf_x"), want=(200,))
        send("profile by identity", "GET", "/v1/cdp/profiles?externalUserId=" + (state["user"] or "x"),
             want=(200,))
        # first page, then (every other cycle) the next page with its cursor
        which = "ledger" if cycle % 2 else "events"
        pg = send(which, "GET", "/v1/cdp/profiles/%s/%s?limit=1" % (state["prf"], which), want=(200,))
        cur = (pg or {}).get("next_cursor")
        send(which + " page 2", "GET", "/v1/cdp/profiles/%s/%s?limit=2%s" % (
            state["prf"], which, "&cursor=" + cur if cur else ""), want=(200,))
        send("health", "GET", "/v1/health", headers={}, want=(200,))
        together = [purchase(user), purchase(user)]
        burst("together", together + [together[0], dict(purchase(), eventType="nope")],
              [(200, 201), (201,), (200, 201), (422,)])
        # the rarer answers, one per cycle in turn
        k = cycle % 8
        if k == 0:
            send("403", "GET", "/v1/cdp/events/" + (state["evt"] or "evt_x"),
                 headers={"Authorization": "Bearer " + write_only}, want=(403,))
        elif k == 1:
            send("other tenant 404", "GET", "/v1/cdp/events/" + (state["evt"] or "evt_x"),
                 headers={"Authorization": "Bearer " + other}, want=(404,))
        elif k == 2:
            send("405", "DELETE", "/v1/cdp/events", headers=auth, want=(405,))
        elif k == 3:
            send("415", "POST", "/v1/cdp/events", purchase(),
                 headers=dict(auth, **{"Content-Type": "text/plain"}), want=(415,))
        elif k == 4:
            send("413", "POST", "/v1/cdp/events", b"{" + b" " * 70000 + b"}", want=(413,))
        elif k == 5:
            send("event types", "GET", "/v1/cdp/event-types", want=(200,))
        elif k == 6:
            send("metrics", "GET", "/metrics", want=(200, 404))
        else:
            send("unknown route", "GET", "/v1/nope", want=(404,))
        send("bad cursor", "GET", "/v1/cdp/profiles/%s/ledger?cursor=%%ZZ" % state["prf"],
             want=(422, 400))
        send("bad identity", "GET", "/v1/cdp/profiles?phone=12", want=(422,))
    took = time.time() - t0
    print("leaks driver: %d requests in %.1f s (%.1f/s); statuses: %s" % (
        sent[0], took, sent[0] / took if took else 0,
        ", ".join("%d=%d" % kv for kv in sorted(counts.items()))), flush=True)
    if bad:
        print("leaks driver: %d unexpected answers, first ones:" % len(bad))
        for b in bad[:10]:
            print("  " + b)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
