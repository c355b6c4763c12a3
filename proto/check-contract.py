#!/usr/bin/env python3
"""Check proto/runtime/v1/api.proto against the CRI runtime.v1 contract table.

Usage: check-contract.py CONTRACT.md [API.proto]

CONTRACT.md is the markdown contract (e.g. /work/shared/cri-runtime-v1.md): lines of the form
  ## service runtime.v1.RuntimeService
  - Method(Request) -> [stream ]Response
  - message Name: field=N (type), ...
  - enum Name: VALUE=N, ...
API.proto defaults to runtime/v1/api.proto next to this script.

Every message, enum, field, enum value, service and method of the contract must be present in the
.proto with the same name, number, type, label (repeated/map) and streaming flags; a message or enum
of the contract must not carry extra fields/values in the .proto either. Definitions the .proto
needs but the contract does not list (types referenced but not tabulated) are reported as notes.
Exit status: 0 when there are no mismatches, 1 otherwise. Python 3 standard library only.
"""

import os
import re
import sys

SCALARS = {
    "double", "float", "int32", "int64", "uint32", "uint64", "sint32", "sint64",
    "fixed32", "fixed64", "sfixed32", "sfixed64", "bool", "string", "bytes",
}


def norm_type(t):
    """Normalise a type string: 'repeated X', 'map<K,V>', 'stream X', or a bare (simple) name."""
    t = " ".join(t.split())
    m = re.fullmatch(r"map\s*<\s*(\w+)\s*,\s*([\w.]+)\s*>", t)
    if m:
        return "map<%s,%s>" % (m.group(1), m.group(2).split(".")[-1])
    parts = t.split(" ")
    parts[-1] = parts[-1].lstrip(".").split(".")[-1]
    return " ".join(parts)


# ---------------------------------------------------------------- contract (markdown) parsing

def parse_contract(path):
    services, messages, enums = {}, {}, {}
    service = None
    with open(path, encoding="utf-8") as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.rstrip("\n")
            m = re.match(r"^##\s+service\s+([\w.]+)\s*$", line)
            if m:
                service = m.group(1)
                services[service] = {}
                continue
            if line.startswith("## "):
                service = None
                continue
            m = re.match(r"^-\s+message\s+(\w+):(.*)$", line)
            if m:
                name, body = m.group(1), m.group(2)
                fields = {}
                for fm in re.finditer(r"(\w+)=(\d+)\s*\(([^)]*)\)", body):
                    fields[fm.group(1)] = (int(fm.group(2)), norm_type(fm.group(3)))
                leftover = re.sub(r"(\w+)=(\d+)\s*\(([^)]*)\)", "", body).replace(",", "").strip()
                if leftover:
                    sys.exit("%s:%d: cannot parse %r" % (path, lineno, leftover))
                if name in messages:
                    sys.exit("%s:%d: message %s listed twice" % (path, lineno, name))
                messages[name] = fields
                continue
            m = re.match(r"^-\s+enum\s+(\w+):(.*)$", line)
            if m:
                name, body = m.group(1), m.group(2)
                values = {}
                for vm in re.finditer(r"(\w+)=(\d+)", body):
                    values[vm.group(1)] = int(vm.group(2))
                if name in enums:
                    sys.exit("%s:%d: enum %s listed twice" % (path, lineno, name))
                enums[name] = values
                continue
            if service:
                m = re.match(r"^-\s+(\w+)\(\s*(stream\s+)?(\w+)\s*\)\s*->\s*(stream\s+)?(\w+)\s*$", line)
                if m:
                    services[service][m.group(1)] = (
                        m.group(3), bool(m.group(2)), m.group(5), bool(m.group(4)))
                elif line.startswith("- "):
                    sys.exit("%s:%d: cannot parse method %r" % (path, lineno, line))
    return services, messages, enums


# ---------------------------------------------------------------- .proto parsing

def tokenize(text):
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", " ", text)
    return re.findall(r'"(?:[^"\\]|\\.)*"|[A-Za-z_][\w.]*|\d+|[{}();=<>,\[\]-]', text)


class ProtoParser:
    def __init__(self, text):
        self.toks = tokenize(text)
        self.i = 0
        self.package = None
        self.syntax = None
        self.messages = {}   # full name (e.g. SecurityProfile) -> {field: (num, type)}
        self.enums = {}      # full name (e.g. SecurityProfile.ProfileType) -> {value: num}
        self.services = {}   # package-qualified name -> {method: (req, req_stream, resp, resp_stream)}
        self.duplicates = []

    def peek(self):
        return self.toks[self.i] if self.i < len(self.toks) else None

    def next(self):
        t = self.peek()
        if t is None:
            raise SyntaxError("unexpected end of .proto")
        self.i += 1
        return t

    def expect(self, t):
        got = self.next()
        if got != t:
            raise SyntaxError("expected %r, got %r (token %d)" % (t, got, self.i))

    def skip_statement(self):
        depth = 0
        while True:
            t = self.next()
            if t == "{":
                depth += 1
            elif t == "}":
                depth -= 1
                if depth == 0:
                    return
            elif t == ";" and depth == 0:
                return

    def skip_options(self):
        if self.peek() == "[":
            while self.next() != "]":
                pass

    def parse(self):
        while self.peek() is not None:
            t = self.next()
            if t == "syntax":
                self.expect("=")
                self.syntax = self.next().strip('"')
                self.expect(";")
            elif t == "package":
                self.package = self.next()
                self.expect(";")
            elif t == "message":
                self.parse_message("")
            elif t == "enum":
                self.parse_enum("")
            elif t == "service":
                self.parse_service()
            elif t in ("option", "import"):
                self.skip_statement()
            elif t == ";":
                pass
            else:
                raise SyntaxError("unexpected top-level token %r" % t)

    def add(self, table, name, value):
        if name in table:
            self.duplicates.append(name)
        table[name] = value

    def parse_message(self, prefix):
        name = prefix + self.next()
        self.expect("{")
        fields = {}
        self.add(self.messages, name, fields)
        while True:
            t = self.next()
            if t == "}":
                return
            if t == ";":
                continue
            if t == "message":
                self.parse_message(name + ".")
            elif t == "enum":
                self.parse_enum(name + ".")
            elif t in ("option", "reserved", "extensions"):
                self.skip_statement()
            elif t == "oneof":
                self.next()
                self.expect("{")
                while self.peek() != "}":
                    if self.peek() == "option":
                        self.skip_statement()
                    else:
                        self.parse_field(fields, self.next(), "")
                self.next()
            elif t == "map":
                self.expect("<")
                k = self.next()
                self.expect(",")
                v = self.next()
                self.expect(">")
                self.parse_field(fields, "map<%s,%s>" % (k, v), "")
            elif t in ("repeated", "optional", "required"):
                label = "repeated " if t == "repeated" else ("optional " if t == "optional" else "required ")
                self.parse_field(fields, self.next(), label)
            else:
                self.parse_field(fields, t, "")

    def parse_field(self, fields, ftype, label):
        fname = self.next()
        self.expect("=")
        num = int(self.next())
        self.skip_options()
        self.expect(";")
        if fname in fields:
            self.duplicates.append("field " + fname)
        fields[fname] = (num, norm_type(label + ftype))

    def parse_enum(self, prefix):
        name = prefix + self.next()
        self.expect("{")
        values = {}
        self.add(self.enums, name, values)
        while True:
            t = self.next()
            if t == "}":
                return
            if t == ";":
                continue
            if t in ("option", "reserved"):
                self.skip_statement()
                continue
            self.expect("=")
            sign = -1 if self.peek() == "-" and self.next() else 1
            values[t] = sign * int(self.next())
            self.skip_options()
            self.expect(";")

    def parse_service(self):
        name = self.next()
        full = "%s.%s" % (self.package, name) if self.package else name
        self.expect("{")
        methods = {}
        self.add(self.services, full, methods)
        while True:
            t = self.next()
            if t == "}":
                return
            if t == ";":
                continue
            if t == "option":
                self.skip_statement()
                continue
            if t != "rpc":
                raise SyntaxError("unexpected token %r in service %s" % (t, name))
            mname = self.next()
            self.expect("(")
            req_stream = self.peek() == "stream" and bool(self.next())
            req = self.next().split(".")[-1]
            self.expect(")")
            self.expect("returns")
            self.expect("(")
            resp_stream = self.peek() == "stream" and bool(self.next())
            resp = self.next().split(".")[-1]
            self.expect(")")
            if self.peek() == "{":
                self.skip_statement()
            else:
                self.expect(";")
            methods[mname] = (req, req_stream, resp, resp_stream)


# ---------------------------------------------------------------- comparison

def by_simple_name(table):
    out = {}
    for full, v in table.items():
        out.setdefault(full.split(".")[-1], []).append((full, v))
    return out


def main(argv):
    if len(argv) not in (2, 3):
        sys.exit(__doc__)
    contract_path = argv[1]
    proto_path = argv[2] if len(argv) == 3 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "runtime", "v1", "api.proto")
    c_services, c_messages, c_enums = parse_contract(contract_path)
    with open(proto_path, encoding="utf-8") as f:
        p = ProtoParser(f.read())
    p.parse()

    errors, notes = [], []
    err = errors.append

    if p.syntax != "proto3":
        err("syntax is %r, expected proto3" % p.syntax)
    if p.package != "runtime.v1":
        err("package is %r, expected runtime.v1" % p.package)
    for d in p.duplicates:
        err("duplicate definition in .proto: %s" % d)

    # Services and methods.
    for svc, methods in c_services.items():
        pm = p.services.get(svc)
        if pm is None:
            err("service %s: missing" % svc)
            continue
        for mname, sig in methods.items():
            got = pm.get(mname)
            if got is None:
                err("rpc %s.%s: missing" % (svc, mname))
            elif got != sig:
                err("rpc %s.%s: expected %s, got %s" % (svc, mname, fmt_sig(sig), fmt_sig(got)))
        for mname in pm:
            if mname not in methods:
                err("rpc %s.%s: not in the contract" % (svc, mname))
    for svc in p.services:
        if svc not in c_services:
            err("service %s: not in the contract" % svc)

    pmsgs, penums = by_simple_name(p.messages), by_simple_name(p.enums)

    # Messages and fields.
    for name, fields in c_messages.items():
        cands = pmsgs.get(name, [])
        if not cands:
            err("message %s: missing" % name)
            continue
        if len(cands) > 1:
            err("message %s: ambiguous in .proto (%s)" % (name, ", ".join(c[0] for c in cands)))
        full, pfields = cands[0]
        for fname, (num, ftype) in fields.items():
            got = pfields.get(fname)
            if got is None:
                err("message %s: field %s=%d (%s) missing" % (name, fname, num, ftype))
                continue
            if got[0] != num:
                err("message %s: field %s number %d, expected %d" % (name, fname, got[0], num))
            if got[1] != ftype:
                err("message %s: field %s type %r, expected %r" % (name, fname, got[1], ftype))
        for fname, (num, ftype) in pfields.items():
            if fname not in fields:
                err("message %s: field %s=%d (%s) not in the contract" % (name, fname, num, ftype))

    # Enums and values.
    for name, values in c_enums.items():
        cands = penums.get(name, [])
        if not cands:
            err("enum %s: missing" % name)
            continue
        if len(cands) > 1:
            err("enum %s: ambiguous in .proto (%s)" % (name, ", ".join(c[0] for c in cands)))
        full, pvalues = cands[0]
        if full != name:
            notes.append("enum %s is nested as %s (same wire encoding)" % (name, full))
        if pvalues != values:
            err("enum %s: expected %s, got %s" % (name, fmt_enum(values), fmt_enum(pvalues)))

    # Every type a field or method uses must be defined in the .proto (protoc enforces this too).
    known = set(pmsgs) | set(penums)
    used = set()
    for fields in p.messages.values():
        for _, ftype in fields.values():
            m = re.fullmatch(r"map<\w+,(\w+)>", ftype)
            used.add(m.group(1) if m else ftype.split(" ")[-1])
    for methods in p.services.values():
        for req, _, resp, _ in methods.values():
            used.update((req, resp))
    for t in sorted(used - SCALARS - known):
        err("type %s is used but not defined in the .proto" % t)

    # Definitions in the .proto beyond the contract table (needed because the table references them).
    c_used = set()
    for fields in c_messages.values():
        for _, ftype in fields.values():
            m = re.fullmatch(r"map<\w+,(\w+)>", ftype)
            c_used.add(m.group(1) if m else ftype.split(" ")[-1])
    for methods in c_services.values():
        for req, _, resp, _ in methods.values():
            c_used.update((req, resp))
    undefined = sorted(c_used - SCALARS - set(c_messages) - set(c_enums))
    for t in undefined:
        notes.append("contract uses %s without tabulating it" % t)
    for full in sorted(p.messages):
        if full.split(".")[-1] not in c_messages:
            notes.append("message %s in .proto is not tabulated in the contract (fields: %s)"
                         % (full, ", ".join("%s=%d (%s)" % (k, v[0], v[1])
                                            for k, v in p.messages[full].items()) or "none"))
    for full in sorted(p.enums):
        if full.split(".")[-1] not in c_enums:
            notes.append("enum %s in .proto is not tabulated in the contract" % full)

    print("contract: %d services / %d methods, %d messages, %d enums"
          % (len(c_services), sum(len(m) for m in c_services.values()), len(c_messages), len(c_enums)))
    print(".proto:   %d services / %d methods, %d messages, %d enums"
          % (len(p.services), sum(len(m) for m in p.services.values()), len(p.messages), len(p.enums)))
    for n in notes:
        print("note: " + n)
    for e in errors:
        print("MISMATCH: " + e)
    print("%d mismatch(es)" % len(errors))
    return 1 if errors else 0


def fmt_sig(sig):
    req, rs, resp, ps = sig
    return "(%s%s) -> %s%s" % ("stream " if rs else "", req, "stream " if ps else "", resp)


def fmt_enum(values):
    return ", ".join("%s=%d" % kv for kv in sorted(values.items(), key=lambda kv: kv[1]))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
