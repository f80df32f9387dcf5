#!/usr/bin/env python3
"""tests/bench/sql_drift.py CEILING_C DB_C — do the ceiling's statements still read
as the service's?

Both files hold tables of C string literals, each entry introduced by a comment
naming it: /* ST_X */ in tests/bench/ceiling.c, /* DB_X ... */ in db/db.c (the
single statements of stmt_sql[] and the templates of multi_sql[], DB_M_X, whose
comments may go on after the name). Each ST_X is compared with DB_X (ST_M_X with
DB_M_X) after joining its literals; templates are compared unexpanded. Prints one line:
"same (N statements)" or "DIFFERENT: ST_A ST_B (...)"; exit status 0 either way,
2 when a file cannot be read.
"""
import re
import sys

# /* NAME [words...] */ then one or more adjacent literals. The comment's text
# may not run past its own "*/", so that a comment without literals after it
# never lends its name to the literals of a later entry.
ENTRY = re.compile(r'/\*\s*((?:ST|DB)_[A-Z0-9_]+)\b(?:(?!\*/).)*\*/((?:\s*"(?:[^"\\]|\\.)*")+)', re.S)
LITERAL = re.compile(r'"((?:[^"\\]|\\.)*)"')


def statements(path, prefix):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    out = {}
    for m in ENTRY.finditer(text):
        name = m.group(1)
        if name.startswith(prefix):
            out[name[len(prefix):]] = "".join(LITERAL.findall(m.group(2)))
    return out


def main():
    if len(sys.argv) != 3:
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        return 2
    try:
        ceiling = statements(sys.argv[1], "ST_")
        service = statements(sys.argv[2], "DB_")
    except OSError as e:
        print(f"cannot read: {e}", file=sys.stderr)
        return 2
    differ = [n for n in sorted(ceiling) if ceiling[n] != service.get(n)]
    if differ:
        why = ", ".join(f"ST_{n}: {'gone from db/db.c' if n not in service else 'text differs'}"
                        for n in differ)
        print(f"DIFFERENT ({why}): update tests/bench/ceiling.c to follow core/ingest.c")
    else:
        print(f"same ({len(ceiling)} statements)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
