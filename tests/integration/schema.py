"""Reading docs/openapi.yaml and checking JSON against its schemas, standard library only.

load_yaml(text)      a loader for the block-style YAML subset docs/openapi.yaml is written
                     in (mappings, sequences, plain / quoted / block scalars, one-line flow
                     collections); anything outside that subset is an error naming the line,
                     never a silent misreading.
Validator(doc)       a JSON Schema validator for the keywords the spec uses (see KEYWORDS);
                     validate(value, schema, strict) returns a list of problems. strict closes
                     every object schema that lists properties and says nothing about
                     additionalProperties, so an undocumented field in a response is reported.
"""
import json
import re

# ---------------------------------------------------------------- YAML subset

_INT = re.compile(r"^[-+]?[0-9]+$")
_FLOAT = re.compile(r"^[-+]?[0-9]+\.[0-9]+$")
_NUMBERISH = re.compile(r"^[-+.]?[0-9]")
# YAML 1.1 (PyYAML) reads these as booleans, YAML 1.2 as strings: never plain.
_AMBIGUOUS = {"yes", "no", "on", "off", "y", "n"}
_INDICATORS = "[]{},#&*!|>'\"%@`"


class YamlError(ValueError):
    pass


class _Line:
    __slots__ = ("no", "indent", "text")

    def __init__(self, no, indent, text):
        self.no, self.indent, self.text = no, indent, text


def _strip_comment(s, no):
    """s without a trailing ' # comment' (quotes respected)."""
    quote = None
    i = 0
    while i < len(s):
        c = s[i]
        if quote:
            if c == quote:
                if quote == "'" and i + 1 < len(s) and s[i + 1] == "'":
                    i += 1
                else:
                    quote = None
            elif c == "\\" and quote == '"':
                i += 1
        elif c in "'\"" and (i == 0 or s[i - 1] in " [{,:-"):
            quote = c
        elif c == "#" and (i == 0 or s[i - 1] in " \t"):
            return s[:i].rstrip()
        i += 1
    if quote:
        raise YamlError("line %d: unterminated quoted scalar" % no)
    return s.rstrip()


def _scalar(tok, no):
    """A plain or quoted scalar (one line) to its value."""
    t = tok.strip()
    if t == "":
        return None
    if t[0] == '"':
        if len(t) < 2 or t[-1] != '"':
            raise YamlError("line %d: bad double-quoted scalar %r" % (no, t))
        try:
            return json.loads(t)
        except ValueError:
            raise YamlError("line %d: only JSON escapes in double quotes: %r" % (no, t))
    if t[0] == "'":
        if len(t) < 2 or t[-1] != "'" or "'" in t[1:-1].replace("''", ""):
            raise YamlError("line %d: bad single-quoted scalar %r" % (no, t))
        return t[1:-1].replace("''", "'")
    if t[0] in _INDICATORS or t.startswith(("- ", "? ", ": ")) or t in ("-", "?", ":"):
        raise YamlError("line %d: quote the scalar %r" % (no, t))
    if ": " in t or t.endswith(":") or "\t" in t:
        raise YamlError("line %d: quote the scalar %r" % (no, t))
    if t in ("null", "~"):
        return None
    if t == "true":
        return True
    if t == "false":
        return False
    if t.lower() in _AMBIGUOUS or t.lower() in ("null", "true", "false", "~"):
        raise YamlError("line %d: %r reads differently in YAML 1.1 and 1.2: quote it" % (no, t))
    if _INT.match(t):
        return int(t)
    if _FLOAT.match(t):
        return float(t)
    if re.match(r"^[0-9]+(\.[0-9]+){2,}$", t):
        return t                          # 3.1.0: a string in YAML 1.1 and 1.2 alike
    if _NUMBERISH.match(t) and re.match(r"^[-+.0-9eE_:]+$", t):
        raise YamlError("line %d: number-like scalar %r: quote it or write digits[.digits]"
                        % (no, t))
    return t


def _flow(s, no):
    """A one-line flow collection ([...] or {...})."""
    pos = [0]

    def ws():
        while pos[0] < len(s) and s[pos[0]] == " ":
            pos[0] += 1

    def token():
        ws()
        i = pos[0]
        if i >= len(s):
            raise YamlError("line %d: unterminated flow collection" % no)
        c = s[i]
        if c in "[{":
            return value()
        if c in "'\"":
            j = i + 1
            while j < len(s):
                if s[j] == c:
                    if c == "'" and j + 1 < len(s) and s[j + 1] == "'":
                        j += 2
                        continue
                    break
                if c == '"' and s[j] == "\\":
                    j += 1
                j += 1
            pos[0] = j + 1
            return _scalar(s[i:j + 1], no)
        j = i
        while j < len(s) and s[j] not in ",]}" and not (s[j] == ":" and s[j + 1:j + 2] in (" ", "")):
            j += 1
        pos[0] = j
        return _scalar(s[i:j], no)

    def value():
        ws()
        c = s[pos[0]]
        pos[0] += 1
        if c == "[":
            out = []
            ws()
            if s[pos[0]:pos[0] + 1] == "]":
                pos[0] += 1
                return out
            while True:
                out.append(token())
                ws()
                c2 = s[pos[0]:pos[0] + 1]
                pos[0] += 1
                if c2 == "]":
                    return out
                if c2 != ",":
                    raise YamlError("line %d: expected , or ] in %r" % (no, s))
        out = {}
        ws()
        if s[pos[0]:pos[0] + 1] == "}":
            pos[0] += 1
            return out
        while True:
            k = token()
            ws()
            if s[pos[0]:pos[0] + 1] != ":":
                raise YamlError("line %d: expected : in %r" % (no, s))
            pos[0] += 1
            if not isinstance(k, str) or k in out:
                raise YamlError("line %d: bad or repeated key %r" % (no, k))
            out[k] = token()
            ws()
            c2 = s[pos[0]:pos[0] + 1]
            pos[0] += 1
            if c2 == "}":
                return out
            if c2 != ",":
                raise YamlError("line %d: expected , or } in %r" % (no, s))

    v = value()
    ws()
    if pos[0] != len(s):
        raise YamlError("line %d: text after the flow collection: %r" % (no, s))
    return v


def _split_key(text, no):
    """'key: rest' -> (key, rest); None when the line is not a mapping entry."""
    if text[0] in "'\"":
        q = text[0]
        j = 1
        while j < len(text):
            if text[j] == q:
                if q == "'" and text[j + 1:j + 2] == "'":
                    j += 2
                    continue
                break
            if q == '"' and text[j] == "\\":
                j += 1
            j += 1
        rest = text[j + 1:]
        if not (rest == ":" or rest.startswith(": ")):
            return None
        return _scalar(text[:j + 1], no), rest[1:].strip()
    if text[0] in "[{":
        return None
    m = re.match(r"^([^:#\s][^:]*?|[^:#\s]*):(?: (.*)|$)", text)
    if m is None:
        return None
    key = m.group(1)
    if key in ("-", "?") or key.startswith(("- ", "? ")):
        return None
    return _scalar(key, no) if key else None, (m.group(2) or "").strip()


class _Parser:
    def __init__(self, text):
        self.raw = text.split("\n")
        self.lines = []
        for i, ln in enumerate(self.raw):
            if "\t" in ln[:len(ln) - len(ln.lstrip())]:
                raise YamlError("line %d: tab in indentation" % (i + 1))
            s = ln.strip()
            if s == "" or s.startswith("#"):
                continue
            if s in ("---", "...") or s.startswith(("%", "--- ")):
                raise YamlError("line %d: one document without directives only" % (i + 1))
            self.lines.append(_Line(i + 1, len(ln) - len(ln.lstrip(" ")), None))
        self.i = 0

    def text(self, ln):
        if ln.text is None:
            ln.text = _strip_comment(self.raw[ln.no - 1].strip(), ln.no)
        return ln.text

    def peek(self):
        return self.lines[self.i] if self.i < len(self.lines) else None

    def parse(self):
        if not self.lines:
            return None
        v = self.block(self.lines[0].indent)
        if self.peek() is not None:
            raise YamlError("line %d: unexpected indentation" % self.peek().no)
        return v

    def block(self, indent):
        ln = self.peek()
        if ln.indent != indent:
            raise YamlError("line %d: expected indentation %d" % (ln.no, indent))
        t = self.text(ln)
        if t == "-" or t.startswith("- "):
            return self.seq(indent)
        if _split_key(t, ln.no) is not None:
            return self.mapping(indent)
        self.i += 1
        return self.inline(t, ln, indent)

    def inline(self, t, ln, indent):
        """The value written after 'key:' or '- ' on line ln."""
        if t == "":
            nxt = self.peek()
            if nxt is None or nxt.indent <= indent:
                return None
            return self.block(nxt.indent)
        if t[0] in "[{":
            return _flow(t, ln.no)
        if t[0] in "|>":
            return self.block_scalar(t, ln, indent)
        if t[0] in "&*!":
            raise YamlError("line %d: anchors, aliases and tags are not supported" % ln.no)
        nxt = self.peek()
        if nxt is not None and nxt.indent > indent:
            raise YamlError("line %d: multi-line plain scalars are not supported" % nxt.no)
        return _scalar(t, ln.no)

    def block_scalar(self, head, ln, indent):
        m = re.match(r"^([|>])([-+]?)$", head)
        if m is None:
            raise YamlError("line %d: block scalar header %r not supported" % (ln.no, head))
        style, chomp = m.group(1), m.group(2)
        # the raw lines up to the next line indented at most `indent`
        body = []
        no = ln.no
        while no < len(self.raw):
            r = self.raw[no]
            if r.strip() and len(r) - len(r.lstrip(" ")) <= indent:
                break
            body.append(r)
            no += 1
        while self.i < len(self.lines) and self.lines[self.i].no <= no:
            self.i += 1
        while body and not body[-1].strip():
            body.pop()
        if not body:
            return ""
        ind = min(len(r) - len(r.lstrip(" ")) for r in body if r.strip())
        rows = [r[ind:] if r.strip() else "" for r in body]
        if style == "|":
            out = "\n".join(rows)
        else:
            out, prev_blank = "", True
            for r in rows:
                if r == "":
                    out += "\n"
                    prev_blank = True
                    continue
                if r.startswith(" "):
                    raise YamlError("line %d: more-indented lines in a folded scalar" % ln.no)
                out += r if prev_blank else " " + r
                prev_blank = False
        if chomp == "+":
            raise YamlError("line %d: keep chomping (+) is not supported" % ln.no)
        return out if chomp == "-" else out + "\n"

    def mapping(self, indent):
        out = {}
        while True:
            ln = self.peek()
            if ln is None or ln.indent < indent:
                return out
            if ln.indent > indent:
                raise YamlError("line %d: unexpected indentation" % ln.no)
            t = self.text(ln)
            kv = _split_key(t, ln.no)
            if kv is None:
                raise YamlError("line %d: expected 'key: value'" % ln.no)
            k, rest = kv
            if not isinstance(k, str):
                raise YamlError("line %d: keys must be strings (quote %r)" % (ln.no, k))
            if k in out:
                raise YamlError("line %d: repeated key %r" % (ln.no, k))
            self.i += 1
            out[k] = self.inline(rest, ln, indent)

    def seq(self, indent):
        out = []
        while True:
            ln = self.peek()
            if ln is None or ln.indent < indent:
                return out
            if ln.indent > indent:
                raise YamlError("line %d: unexpected indentation" % ln.no)
            t = self.text(ln)
            if not (t == "-" or t.startswith("- ")):
                raise YamlError("line %d: expected '- item'" % ln.no)
            rest = t[1:].strip()
            self.i += 1
            if rest and rest[0] not in "[{|>" and _split_key(rest, ln.no) is not None:
                # "- key: value" opens a mapping whose keys sit at indent + 2
                inner = indent + 2 + (len(t) - 2 - len(t[2:].lstrip(" ")))
                ln2 = _Line(ln.no, inner, rest)
                self.i -= 1
                self.lines[self.i] = ln2
                out.append(self.mapping(inner))
            else:
                out.append(self.inline(rest, ln, indent))


def load_yaml(text):
    """Parse the YAML subset described in the module docstring."""
    return _Parser(text).parse()


# ---------------------------------------------------------------- JSON Schema subset

KEYWORDS = {
    # checked
    "$ref", "type", "const", "enum", "properties", "required", "additionalProperties",
    "items", "minItems", "maxItems", "minProperties", "maxProperties", "minLength",
    "maxLength", "minimum", "maximum", "pattern", "oneOf", "anyOf", "allOf",
    # annotations only
    "description", "title", "format", "examples", "default", "deprecated", "readOnly",
    "writeOnly", "$comment",
}

_TYPES = {
    "null": lambda v: v is None,
    "boolean": lambda v: isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "string": lambda v: isinstance(v, str),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
}


def _show(v, n=120):
    s = json.dumps(v, ensure_ascii=False)
    return s if len(s) <= n else s[:n] + "..."


class Validator:
    def __init__(self, doc):
        self.doc = doc

    def resolve(self, ref):
        """The object a local '#/a/b' reference points at (KeyError when it does not)."""
        if not isinstance(ref, str) or not ref.startswith("#/"):
            raise KeyError("not a local reference: %r" % (ref,))
        node = self.doc
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and part in node:
                node = node[part]
            else:
                raise KeyError("unresolved reference %s" % ref)
        return node

    def deref(self, obj):
        seen = 0
        while isinstance(obj, dict) and "$ref" in obj:
            obj = self.resolve(obj["$ref"])
            seen += 1
            if seen > 20:
                raise KeyError("reference loop")
        return obj

    def _declared(self, schema):
        """(names, open): the properties an allOf combination declares, and whether
        one of its parts leaves the object open."""
        schema = self.deref(schema)
        names, open_ = set(schema.get("properties", {})), False
        ap = schema.get("additionalProperties")
        if ap is not None and ap is not False:
            open_ = True
        for sub in schema.get("allOf", []):
            n, o = self._declared(sub)
            names |= n
            open_ = open_ or o
        return names, open_

    def validate(self, value, schema, strict=False, path="$"):
        out = []
        self._v(value, schema, strict, path, out, True)
        return out

    def _v(self, v, s, strict, path, out, close):
        if s is True or s == {}:
            return
        if s is False:
            out.append("%s: no value is allowed here" % path)
            return
        if "$ref" in s:
            try:
                target = self.resolve(s["$ref"])
            except KeyError as e:
                out.append("%s: %s" % (path, e))
                return
            self._v(v, target, strict, path, out, close)
            return
        t = s.get("type")
        if t is not None:
            types = t if isinstance(t, list) else [t]
            if not any(_TYPES[x](v) for x in types):
                out.append("%s: expected type %s, got %s" % (path, "|".join(types), _show(v)))
                return
        if "const" in s and not _same(v, s["const"]):
            out.append("%s: expected %s, got %s" % (path, _show(s["const"]), _show(v)))
        if "enum" in s and not any(_same(v, e) for e in s["enum"]):
            out.append("%s: %s is not one of %s" % (path, _show(v), _show(s["enum"])))
        if isinstance(v, str):
            if "minLength" in s and len(v) < s["minLength"]:
                out.append("%s: shorter than %d: %s" % (path, s["minLength"], _show(v)))
            if "maxLength" in s and len(v) > s["maxLength"]:
                out.append("%s: longer than %d: %s" % (path, s["maxLength"], _show(v)))
            if "pattern" in s and re.search(s["pattern"], v) is None:
                out.append("%s: %s does not match /%s/" % (path, _show(v), s["pattern"]))
        if _TYPES["number"](v):
            if "minimum" in s and v < s["minimum"]:
                out.append("%s: %s is below %s" % (path, v, s["minimum"]))
            if "maximum" in s and v > s["maximum"]:
                out.append("%s: %s is above %s" % (path, v, s["maximum"]))
        if isinstance(v, list):
            if "minItems" in s and len(v) < s["minItems"]:
                out.append("%s: fewer than %d items" % (path, s["minItems"]))
            if "maxItems" in s and len(v) > s["maxItems"]:
                out.append("%s: more than %d items" % (path, s["maxItems"]))
            if "items" in s:
                for i, x in enumerate(v):
                    self._v(x, s["items"], strict, "%s[%d]" % (path, i), out, True)
        if isinstance(v, dict):
            props = s.get("properties", {})
            if "minProperties" in s and len(v) < s["minProperties"]:
                out.append("%s: fewer than %d members" % (path, s["minProperties"]))
            if "maxProperties" in s and len(v) > s["maxProperties"]:
                out.append("%s: more than %d members" % (path, s["maxProperties"]))
            for r in s.get("required", []):
                if r not in v:
                    out.append("%s: required member %r missing in %s" % (path, r, _show(v)))
            ap = s.get("additionalProperties")
            for k, x in v.items():
                sub = "%s.%s" % (path, k)
                if k in props:
                    self._v(x, props[k], strict, sub, out, True)
                elif isinstance(ap, dict):
                    self._v(x, ap, strict, sub, out, True)
            if close:
                if "allOf" in s:
                    names, open_ = self._declared(s)
                    closed = strict and not open_ and names
                else:
                    names = set(props)
                    closed = ap is False or (strict and ap is None and "properties" in s)
                if closed:
                    extra = sorted(k for k in v if k not in names)
                    if extra:
                        out.append("%s: undocumented member(s) %s" % (path, ", ".join(extra)))
        for sub in s.get("allOf", []):
            self._v(v, sub, strict, path, out, False)
        if "anyOf" in s:
            if not any(not self.validate_at(v, x, strict, path) for x in s["anyOf"]):
                out.append("%s: matches none of anyOf: %s" % (path, self._branches(v, s["anyOf"], strict, path)))
        if "oneOf" in s:
            ok = [i for i, x in enumerate(s["oneOf"]) if not self.validate_at(v, x, strict, path)]
            if len(ok) != 1:
                why = self._branches(v, s["oneOf"], strict, path) if not ok else \
                    "branches %s all match" % ok
                out.append("%s: must match exactly one of oneOf: %s" % (path, why))

    def validate_at(self, v, s, strict, path):
        out = []
        self._v(v, s, strict, path, out, True)
        return out

    def _branches(self, v, branches, strict, path):
        parts = []
        for i, b in enumerate(branches):
            name = b.get("$ref", "#%d" % i).rsplit("/", 1)[-1] if isinstance(b, dict) else i
            errs = self.validate_at(v, b, strict, path)
            parts.append("%s: %s" % (name, errs[0] if errs else "ok"))
        return "; ".join(parts)


def _same(a, b):
    """JSON equality (true is not 1)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


def schema_objects(schema, validator, seen=None):
    """Every schema object reachable from schema (following $ref), each once."""
    seen = set() if seen is None else seen
    if not isinstance(schema, dict) or id(schema) in seen:
        return
    seen.add(id(schema))
    yield schema
    if "$ref" in schema:
        try:
            yield from schema_objects(validator.resolve(schema["$ref"]), validator, seen)
        except KeyError:
            pass
    for k in ("items", "additionalProperties"):
        if isinstance(schema.get(k), dict):
            yield from schema_objects(schema[k], validator, seen)
    for sub in schema.get("properties", {}).values():
        yield from schema_objects(sub, validator, seen)
    for k in ("oneOf", "anyOf", "allOf"):
        for sub in schema.get(k, []):
            yield from schema_objects(sub, validator, seen)
