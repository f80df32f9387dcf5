"""The app's request log (README "Logs"): one JSON line per request on the app's
stderr, which the web server writes to its error log (lighttpd, Apache) or to the
app's own log (nginx's spawn-fcgi). The fields, in order: ts, request_id, method,
path, tenant, key_id, status, duration_ms; never a key or a body (that part is
test_security's). The line is found under RFEVENTS_VAR by its request id."""
import json
import os
import re
import time

from lib import EVENTS, check, expect_status, fail, post, purchase, request, uid, writer

VAR = os.environ.get("RFEVENTS_VAR", "")
FIELDS = ["ts", "request_id", "method", "path", "tenant", "key_id", "status", "duration_ms"]


def _log_line(rid, wait=5.0):
    """(raw text, parsed object) of the log line of request rid."""
    if not VAR or not os.path.isdir(VAR):
        fail("RFEVENTS_VAR is not a directory: %r" % VAR)
    needle = ('"request_id":"%s"' % rid).encode()
    end = time.time() + wait
    while True:
        for root, _dirs, files in os.walk(VAR):
            for name in files:
                if not name.endswith(".log"):
                    continue
                try:
                    with open(os.path.join(root, name), "rb") as f:
                        data = f.read()
                except OSError:
                    continue
                i = data.find(needle)
                if i < 0:
                    continue
                ls = data.rfind(b"\n", 0, i) + 1
                le = data.find(b"\n", i)
                line = data[ls:le if le >= 0 else len(data)]
                # the web server may wrap the line (a prefix, Apache CGI's
                # ": script" suffix): the object runs from {"ts": to the last }
                start, stop = line.find(b'{"ts":'), line.rfind(b"}")
                check(0 <= start < stop, "log line of %s holds no JSON object: %r" % (rid, line))
                raw = line[start:stop + 1].decode("utf-8")
                try:
                    return raw, json.loads(raw)
                except ValueError as e:
                    fail("log line of %s is not JSON (%s): %r" % (rid, e, raw))
        if time.time() > end:
            fail("no log line with request id %s in the logs under %s" % (rid, VAR))
        time.sleep(0.1)


def _check_line(raw, o, rid, method, path, status, tenant, keyed):
    check(list(o.keys()) == FIELDS, "log fields %r, expected %r: %s" % (list(o.keys()), FIELDS, raw))
    check(o["request_id"] == rid and o["method"] == method and o["path"] == path
          and o["status"] == status, "log line of %s %s (%d): %s" % (method, path, status, raw))
    check(o["tenant"] == tenant, "log tenant %r, expected %r: %s" % (o["tenant"], tenant, raw))
    if keyed:
        check(isinstance(o["key_id"], str) and o["key_id"].startswith("key_"),
              "log key_id must be the key's public id: %s" % raw)
    else:
        check(o["key_id"] is None, "log key_id must be null without a key: %s" % raw)
    check(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", o["ts"] or "") is not None,
          "log ts %r is not an RFC 3339 UTC instant" % o["ts"])
    check(re.search(r'"duration_ms":\d+\.\d{3}\}$', raw) is not None
          and 0 <= o["duration_ms"] < 60000,
          "log duration_ms must be milliseconds with 3 decimals: %s" % raw)


def test_one_json_line_per_request_with_its_fields():
    k = writer()
    cases = [
        ("POST", EVENTS, purchase(), k, 201, "acme"),
        ("POST", EVENTS, purchase(), None, 401, None),
        ("GET", "/v1/health", None, None, 200, None),
        # no route: nothing is authenticated, so no tenant
        ("GET", "/v1/no-such-route-" + uid("l"), None, k, 404, None),
    ]
    for method, path, body, key, status, tenant in cases:
        rid = "req-log-" + uid("l")
        r = request(method, path, body=body, key=key, headers={"X-Request-Id": rid})
        expect_status(r, status, what="%s %s" % (method, path))
        check(r.headers.get("x-request-id") == rid, "X-Request-Id not echoed: " + r.describe())
        raw, o = _log_line(rid)
        _check_line(raw, o, rid, method, path, status, tenant, key is not None and tenant)


def test_log_line_id_is_the_answers_when_none_is_sent():
    r = post(purchase(), writer())
    expect_status(r, 201, what="event without X-Request-Id")
    rid = r.headers.get("x-request-id", "")
    check(rid.startswith("req_"), "a request id is made when none is sent: " + r.describe())
    raw, o = _log_line(rid)
    _check_line(raw, o, rid, "POST", EVENTS, 201, "acme", True)
