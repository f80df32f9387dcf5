"""Hot reload of tenant files under the running server (CONF.md "Reload", API.md §6):
a new file, an in-place rewrite (same inode, same size), a rename over the file, a
broken file (the previous version stays in force and /v1/health lists the error as
file:line:col) and its fix. Every FastCGI process must have picked up each change:
after the 2 s of the contract (+0.5 s) bursts of concurrent requests, which the web
server spreads over its processes, must all see the new version.

The test writes tenants/zz_reload_<random>.yaml into RFEVENTS_CONF and always
removes it at the end.
"""
import concurrent.futures
import hashlib
import os
import re
import time
import uuid

from lib import BATCH, EVENTS, check, event, get, make_key, post, request, uid

CONF = os.environ.get("RFEVENTS_CONF", os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "conf"))
WAIT = 2.5          # the contract's 2 s, plus scheduling slack
JOBS = 48           # requests per check: batches, single events, health
PARALLEL = 12       # at once: more than the web server's FastCGI processes
BATCH_ITEMS = 40    # a batch keeps a process busy while the others get work

# Every version below has the same length (only the factor differs), so an in-place
# rewrite keeps inode and size: only the times (or the content) show the change.
TEMPLATE = """\
# temporary tenant of tests/integration/test_reload.py (removed by the test)
event_types:
  buy:
    properties:
      amount: { type: number, required: true, min: 0 }
rules:
  - id: reload_rule
    event: buy
    points: properties.amount * %s
"""
RULE_LINE = TEMPLATE.splitlines().index("    points: properties.amount * %s") + 1

# YAML that does not parse (an unclosed flow sequence)
BROKEN_YAML = TEMPLATE.replace("points: properties.amount * %s",
                               "points: [properties.amount, 9")
# YAML that parses, with an expression syntax error on RULE_LINE, the same size as TEMPLATE
BROKEN_EXPR = TEMPLATE % "("


def _sha(data):
    return hashlib.sha256(data.encode("utf-8")).hexdigest()


class _Tenant:
    def __init__(self):
        self.slug = "zz_reload_" + uuid.uuid4().hex[:12]
        self.path = os.path.join(CONF, "tenants", self.slug + ".yaml")
        self.key = make_key(self.slug, "admin")
        self.error_line = None

    def check_all(self, factor, version, what, health_lists=None):
        """A burst of batches (slow enough to keep every FastCGI process busy at
        once), single events and, when health_lists is not None, GET /v1/health in
        between: every item must get amount * factor points and that rules_version;
        every health answer must be 200 and list the file under config_errors with
        file:line:col (health_lists True) or not list it (False)."""
        def items(n):
            return [event("buy", identity={"externalUserId": uid("rl")}, properties={"amount": 10})
                    for _ in range(n)]

        def version_of(event_id):
            d = get(EVENTS + "/" + event_id, self.key)
            if d.status != 200 or not d.is_json:
                return "GET event: " + d.describe(300)
            if d.body.get("rules_version") != version:
                return "rules_version %r, expected %s" % (d.body.get("rules_version"), version)
            return None

        def job(i):
            kind = ("batch", "health", "single", "health")[i % 4]
            if kind == "health":
                if health_lists is None:
                    return None
                return _health_problem(self.slug, health_lists, self.error_line)
            if kind == "single":
                r = post(items(1)[0], self.key)
                if r.status != 201 or not r.is_json:
                    return "single: " + r.describe(300)
                if r.body.get("points_awarded") != 10 * factor:
                    return "single: points_awarded %r, expected %d: %s" % (
                        r.body.get("points_awarded"), 10 * factor, r.describe(400))
                return version_of(r.body["event_id"])
            r = request("POST", BATCH, {"items": items(BATCH_ITEMS)}, key=self.key)
            if r.status != 200 or not r.is_json or len(r.body.get("results") or []) != BATCH_ITEMS:
                return "batch: " + r.describe(300)
            res = r.body["results"]
            bad = [x for x in res if x.get("status") != "accepted"
                   or x.get("points_awarded") != 10 * factor]
            if bad:
                return "batch: %d of %d items not accepted with %d points, first %r" % (
                    len(bad), len(res), 10 * factor, bad[0])
            return version_of(res[0]["event_id"])
        with concurrent.futures.ThreadPoolExecutor(max_workers=PARALLEL) as ex:
            out = list(ex.map(job, range(JOBS)))
        bad = [x for x in out if x]
        check(not bad, "%s: %d of %d requests saw another version, first: %s" % (
            what, len(bad), JOBS, bad[:3]))

    def wait(self, since):
        left = since + WAIT - time.time()
        if left > 0:
            time.sleep(left)


def _health_problem(slug, listed, line=None):
    """One GET /v1/health: None when it is 200 and lists slug.yaml under config_errors
    as file:line:col: message (listed) or does not mention it (not listed)."""
    r = get("/v1/health")
    if r.status != 200 or not r.is_json or not isinstance(r.body.get("config_errors"), list):
        return "health: expected 200 with a config_errors list: " + r.describe(300)
    mine = [x for x in r.body["config_errors"] if slug + ".yaml" in str(x)]
    if not listed:
        return "health still lists %s.yaml: %r" % (slug, mine) if mine else None
    if not mine:
        return "health does not list %s.yaml under config_errors: %s" % (slug, r.describe(500))
    pat = re.escape(slug) + r"\.yaml:%s:\d+: \S" % (line if line is not None else r"\d+")
    if not all(isinstance(x, str) and re.search(pat, x) for x in mine):
        return "config_errors entries must be file:line:col: message%s: %r" % (
            "" if line is None else " at line %d" % line, mine)
    return None


def _write_in_place(path, text, keep_mtime=False):
    st = os.stat(path)
    with open(path, "r+", encoding="utf-8") as f:
        f.seek(0)
        f.truncate()
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    if keep_mtime:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    st2 = os.stat(path)
    check(st2.st_ino == st.st_ino, "the in-place rewrite changed the inode")
    return st, st2


def _replace(path, text):
    tmp = path + ".tmp-" + uuid.uuid4().hex[:6]
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


def test_hot_reload_of_a_tenant_file():
    t = _Tenant()
    try:
        # 0. no file yet: the key works, but the tenant has no configuration;
        #    that is the operator's to fix, so the client is told to retry
        #    (503 + Retry-After) rather than to drop the event (4xx)
        r = post(event("buy", identity={"externalUserId": uid("rl")}, properties={"amount": 10}), t.key)
        check(r.status == 503 and r.headers.get("retry-after"),
              "before the tenant file exists: expected 503 with Retry-After, got " + r.describe())

        # 1. a new file (the key was made before the file existed)
        v1 = TEMPLATE % "1"
        start = time.time()
        _replace(t.path, v1)
        t.wait(start)
        t.check_all(1, _sha(v1), "new tenant file, %.1f s later" % WAIT, health_lists=False)

        # 2. rewritten in place: same inode, same size, another factor
        v2 = TEMPLATE % "3"
        check(len(v2) == len(v1), "test versions must have one size")
        start = time.time()
        before, after = _write_in_place(t.path, v2)
        check(before.st_size == after.st_size, "in-place rewrite changed the size")
        t.wait(start)
        t.check_all(3, _sha(v2), "in-place rewrite (same inode and size)")

        # 3. rewritten in place, same size, and the mtime put back (cp -p, rsync -t)
        v3 = TEMPLATE % "4"
        start = time.time()
        _write_in_place(t.path, v3, keep_mtime=True)
        t.wait(start)
        t.check_all(4, _sha(v3), "in-place rewrite with the old mtime restored")

        # 4. a temporary file renamed over it
        v4 = TEMPLATE % "5"
        start = time.time()
        _replace(t.path, v4)
        t.wait(start)
        t.check_all(5, _sha(v4), "write-temp-then-rename")

        # 5. broken YAML: health 200 listing file:line:col, the previous rules stay
        start = time.time()
        _replace(t.path, BROKEN_YAML)
        t.wait(start)
        t.check_all(5, _sha(v4), "YAML syntax error: previous version in force, health lists it",
                    health_lists=True)

        # 6. fixed: the error goes, the new rules apply
        v6 = TEMPLATE % "7"
        start = time.time()
        _replace(t.path, v6)
        t.wait(start)
        t.check_all(7, _sha(v6), "YAML fixed", health_lists=False)

        # 7. an expression syntax error written in place (same size), then fixed in place
        check(len(BROKEN_EXPR) == len(v6), "test versions must have one size")
        start = time.time()
        _write_in_place(t.path, BROKEN_EXPR)
        t.wait(start)
        t.error_line = RULE_LINE
        t.check_all(7, _sha(v6), "expression syntax error: previous version in force, health "
                    "lists it at line %d" % RULE_LINE, health_lists=True)
        t.error_line = None
        v8 = TEMPLATE % "2"
        start = time.time()
        _write_in_place(t.path, v8)
        t.wait(start)
        t.check_all(2, _sha(v8), "expression fixed in place", health_lists=False)
    finally:
        try:
            os.unlink(t.path)
        except FileNotFoundError:
            pass
        for name in os.listdir(os.path.join(CONF, "tenants")):
            if name.startswith(t.slug + ".yaml.tmp-"):
                os.unlink(os.path.join(CONF, "tenants", name))
    # deleted: after the reload delay no health answer mentions it any more
    time.sleep(WAIT)
    probs = [p for p in (_health_problem(t.slug, False) for _ in range(16)) if p]
    check(not probs, "after deleting the file: %s" % probs[:2])
