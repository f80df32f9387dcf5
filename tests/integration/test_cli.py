"""The operator command line (API.md §6): check, key create/list/revoke, migrate."""
import os
import re
import shutil
import tempfile

from lib import (RFEVENTS_BIN, check, cli, expect_accepted, expect_error, get_event, make_key,
                 post, purchase, uid)

GOOD = """settings:
  auto_create_profiles: true
event_types:
  signup:
    properties: {}
"""


def _conf_dir(files):
    d = tempfile.mkdtemp(prefix="rfevents-it-conf.")
    os.makedirs(os.path.join(d, "tenants"))
    for name, text in files.items():
        with open(os.path.join(d, "tenants", name), "w") as f:
            f.write(text)
    return d


def _check_dir(files):
    d = _conf_dir(files)
    try:
        p = cli("check", d, check=False)
        return p.returncode, p.stdout + p.stderr
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_check_accepts_the_test_configuration():
    conf = os.environ.get("RFEVENTS_CONF")
    check(conf, "RFEVENTS_CONF is not set")
    p = cli("check", conf, check=False)
    check(p.returncode == 0, "rfevents check %s: exit %d: %s%s" % (conf, p.returncode, p.stdout, p.stderr))
    rc, out = _check_dir({"t1.yaml": GOOD})
    check(rc == 0, "a minimal tenant file should pass: exit %d: %s" % (rc, out))


def _expect_position(files, fname, line, what):
    rc, out = _check_dir(files)
    check(rc == 1, "%s: expected exit 1, got %d: %s" % (what, rc, out))
    pat = re.compile(r"^\S*%s:(\d+):(\d+): \S" % re.escape(fname), re.M)
    hits = [(int(a), int(b)) for a, b in pat.findall(out)]
    check(hits, "%s: expected a line 'FILE:LINE:COL: message' naming %s, got: %s" % (what, fname, out))
    check(any(h[0] == line for h in hits), "%s: expected line %d, got %r: %s" % (what, line, hits, out))


def test_check_reports_file_line_col():
    _expect_position({"bad.yaml": GOOD.replace("  auto_create_profiles: true\n",
                                               "  auto_create_profiles: true\n  bogus_key: 1\n")},
                     "bad.yaml", 3, "unknown settings key")
    _expect_position({"ok.yaml": GOOD, "rules.yaml": GOOD + "rules:\n  - id: r1\n    event: signup\n"
                      "    points: \"1 +\"\n"}, "rules.yaml", 9, "bad expression")
    _expect_position({"syntax.yaml": GOOD + "rules: a: b\n"}, "syntax.yaml", 6, "YAML syntax error")
    _expect_position({"types.yaml": GOOD.replace("properties: {}", "properties:\n      x: { type: strng }")},
                     "types.yaml", 6, "unknown property type")


def test_key_create_list_revoke():
    name = uid("clikey")
    k = make_key("acme", None, None, name=name)
    # default scopes: events:write
    b = expect_accepted(post(purchase(), k), what="key with the default scopes ingests")
    expect_error(get_event(b["event_id"], k), 403, "forbidden", what="default scopes do not include events:read")
    lines = [ln for ln in cli("key", "list", "--tenant", "acme").stdout.splitlines() if name in ln]
    check(len(lines) == 1, "key list: expected one line with name %s, got %r" % (name, lines))
    check(k not in lines[0], "key list shows the key itself: %r" % lines[0])
    check("events:write" in lines[0], "key list line lacks its scopes: %r" % lines[0])
    kid = lines[0].split()[0]
    cli("key", "revoke", kid)
    line = [ln for ln in cli("key", "list", "--tenant", "acme").stdout.splitlines() if name in ln]
    check(line and line[0] != lines[0], "key list does not show the revocation: %r" % line)


def test_migrate_is_idempotent():
    for i in range(2):
        p = cli("migrate", check=False)
        check(p.returncode == 0, "rfevents migrate (run %d): exit %d: %s%s" % (
            i + 1, p.returncode, p.stdout, p.stderr))
    check(os.path.exists(RFEVENTS_BIN), RFEVENTS_BIN)
