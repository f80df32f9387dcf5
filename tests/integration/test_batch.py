"""POST /v1/cdp/events/batch. API.md §2.2."""
import json

from lib import (BATCH, batch, check, check_accepted_fields, check_error_body, event,
                 expect_accepted, expect_conflict, expect_duplicate, expect_error,
                 expect_json_object, expect_status, fetch_event, pmap, post, purchase, uid,
                 writer)


def _results(r, n, what):
    expect_status(r, 200, what=what)
    res = expect_json_object(r, what).get("results")
    check(isinstance(res, list) and len(res) == n,
          "%s: expected %d results, got %s" % (what, n, r.describe(1500)))
    return res


def test_batch_mixed_results_in_order():
    k = writer()
    items = [
        purchase(),                                            # 0 accepted
        purchase(properties={}),                               # 1 validation_failed
        event("signup"),                                       # 2 accepted
        purchase(eventType="no_such_type"),                    # 3 unknown_event_type
        purchase(identity={"phone": "12"}),                    # 4 invalid_identity
        purchase(source="bad source"),                         # 5 validation_failed
        purchase(),                                            # 6 accepted
    ]
    r = batch(items, k)
    res = _results(r, len(items), "mixed batch")
    w = r.describe(3000)
    for i in (0, 2, 6):
        check_accepted_fields(res[i], "item %d: %s" % (i, w))
    check_error_body(res[1], "validation_failed", "item 1: " + w, field="properties")
    check_error_body(res[3], "unknown_event_type", "item 3: " + w)
    check_error_body(res[4], "invalid_identity", "item 4: " + w)
    check_error_body(res[5], "validation_failed", "item 5: " + w, field="source")
    ids = [res[i]["event_id"] for i in (0, 2, 6)]
    check(len(set(ids)) == 3, "accepted items share event ids: %r" % ids)
    for i in (0, 2, 6):
        doc = fetch_event(res[i]["event_id"])
        check(doc.get("externalEventId") == items[i]["externalEventId"],
              "result %d is not item %d (results out of order?): %r" % (i, i, doc))


def test_batch_items_as_if_alone():
    """Items are evaluated exactly as if sent alone: after the batch, each accepted
    item sent alone is a duplicate of it; each refused item was not consumed."""
    k = writer()
    good, bad = purchase(), purchase(properties={"order_id": "x", "amount": -1, "currency": "USD"})
    res = _results(batch([good, bad], k), 2, "batch")
    check_accepted_fields(res[0], "item 0: %r" % res)
    expect_duplicate(post(good, k), res[0]["event_id"], what="accepted batch item sent alone")
    bad["properties"]["amount"] = 1
    expect_accepted(post(bad, k), what="refused batch item, fixed, sent alone")
    # and the other way round: an event sent alone is a duplicate inside a batch
    single = purchase()
    b = expect_accepted(post(single, k))
    res = _results(batch([single], k), 1, "batch with an already accepted event")
    check(res[0].get("status") == "duplicate" and res[0].get("original_event_id") == b["event_id"],
          "expected duplicate of %s: %r" % (b["event_id"], res))


def test_batch_duplicate_and_conflict_within_one_batch():
    k = writer()
    a = purchase()
    c = purchase()
    c2 = json.loads(json.dumps(c))
    c2["properties"]["amount"] = 99
    res = _results(batch([a, a, c, c2, a], k), 5, "batch with repeats")
    check_accepted_fields(res[0], "item 0: %r" % res)
    check(res[1] == {"status": "duplicate", "original_event_id": res[0]["event_id"]} or (
        res[1].get("status") == "duplicate" and res[1].get("original_event_id") == res[0]["event_id"]),
        "item 1 should be a duplicate of item 0: %r" % res)
    check_accepted_fields(res[2], "item 2: %r" % res)
    check_error_body(res[3], "conflict", "item 3 (same id, other amount): %r" % res)
    check(res[3].get("original_event_id") == res[2]["event_id"],
          "the conflict should carry original_event_id %s: %r" % (res[2]["event_id"], res))
    check(res[4].get("status") == "duplicate" and res[4].get("original_event_id") == res[0]["event_id"],
          "item 4 should be a duplicate of item 0: %r" % res)
    expect_conflict(post(c2, k), res[2]["event_id"], what="the conflicting item alone")


def test_batch_size_limits():
    k = writer()
    for body, what in (({"items": []}, "empty items"),):
        r = post(body, k, path=BATCH)
        expect_error(r, 422, ("validation_failed", "batch_too_large"), what=what)
    items = [purchase() for _ in range(1001)]
    expect_error(batch(items, k), 422, "batch_too_large", what="1001 items")
    # nothing of the refused batch was applied
    expect_accepted(post(items[0], k), what="first item of the refused 1001-item batch, alone")
    expect_accepted(post(items[1000], k), what="last item of the refused 1001-item batch, alone")


def test_batch_items_must_be_array():
    k = writer()
    cases = [({"items": "x"}, "items a string"), ({"items": {"0": purchase()}}, "items an object"),
             ({"items": None}, "items null"), ({"items": 5}, "items a number"), ({}, "items missing"),
             ({"events": [purchase()]}, "items under another name")]
    for body, what in cases:
        # with "events" instead of "items" the details may name either field
        field = None if "events" in body else "items"
        expect_error(post(body, k, path=BATCH), 422, "validation_failed", field=field, what=what)


def test_batch_non_object_items_fail_alone():
    k = writer()
    items = [5, purchase(), "x", None, [purchase()], purchase()]
    res = _results(batch(items, k), len(items), "batch with non-object items")
    for i in (0, 2, 3, 4):
        check_error_body(res[i], ("malformed_json", "validation_failed"), "item %d: %r" % (i, res))
    check_accepted_fields(res[1], "item 1: %r" % res)
    check_accepted_fields(res[5], "item 5: %r" % res)


def test_batch_of_1000():
    k = writer()
    items = [purchase() if i % 2 else event("signup") for i in range(1000)]
    r = batch(items, k, timeout=120)
    res = _results(r, 1000, "batch of 1000")
    bad = [(i, x) for i, x in enumerate(res) if x.get("status") != "accepted"]
    check(not bad, "%d of 1000 not accepted, first: %r" % (len(bad), bad[:3]))
    ids = {x["event_id"] for x in res}
    check(len(ids) == 1000, "expected 1000 distinct event ids, got %d" % len(ids))
    for i in (0, 499, 999):
        doc = fetch_event(res[i]["event_id"])
        check(doc.get("externalEventId") == items[i]["externalEventId"], "result %d out of order" % i)
    # the whole batch again: all duplicates of the same ids, in order
    res2 = _results(batch(items, k, timeout=120), 1000, "same batch of 1000 again")
    wrong = [i for i in range(1000) if res2[i].get("status") != "duplicate"
             or res2[i].get("original_event_id") != res[i]["event_id"]]
    check(not wrong, "%d of 1000 retried items not duplicates of the first run, first: %r" % (
        len(wrong), res2[wrong[0]] if wrong else None))


def test_batch_of_one_matches_single():
    k = writer()
    ev = purchase()
    res = _results(batch([ev], k), 1, "batch of one")
    b = check_accepted_fields(res[0], "batch of one: %r" % res)
    check(b["profile_created"] is True, "new identity: profile_created should be true: %r" % b)
    r2 = _results(batch([purchase(identity=ev["identity"])], k), 1, "batch of one, known identity")
    check(r2[0].get("profile_id") == b["profile_id"] and r2[0].get("profile_created") is False,
          "known identity: expected profile %s, not created: %r" % (b["profile_id"], r2))


def test_batch_same_identity_in_one_batch_one_profile():
    k = writer()
    ident = {"externalUserId": uid("u")}
    res = _results(batch([purchase(identity=ident) for _ in range(10)], k), 10, "batch, one identity")
    pids = {x.get("profile_id") for x in res}
    check(len(pids) == 1, "one identity, %d profiles in one batch: %r" % (len(pids), pids))
    created = [x.get("profile_created") for x in res]
    check(created[0] is True and not any(created[1:]), "profile_created should be true only first: %r" % created)


def test_parallel_batches_independent():
    k = writer()
    groups = [[purchase() for _ in range(50)] for _ in range(8)]
    rs = pmap(lambda g: batch(g, k), groups, workers=8)
    n = 0
    for g, r in zip(groups, rs):
        res = _results(r, 50, "parallel batch")
        n += sum(1 for x in res if x.get("status") == "accepted")
    check(n == 400, "expected 400 accepted across 8 parallel batches, got %d" % n)
