#!/usr/bin/env python3
"""List non-test Rust functions longer than a limit (default 80 lines), and the comment
share of each crate. How it counts: a function runs from its `fn` line to the line of
its closing brace, both included; `#[cfg(test)]` modules, `tests/`, `benches/` and
`examples/` and `tests.rs` files are left out, and so are files generated from tables (`// @generated`).
A comment line is one whose first non-blank characters are `//` (doc comments too).

    scripts/long-fns.py [--limit N] [--comments] [PATH...]
"""
import argparse
import pathlib
import re
import sys

FN = re.compile(r"^\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?(extern\s+\"[^\"]*\"\s+)?fn\s+(\w+)")


def strip_strings(line):
    # Braces inside string and char literals must not count.
    line = re.sub(r'"(\\.|[^"\\])*"', '""', line)
    line = re.sub(r"'(\\.|[^'\\])'", "''", line)
    return line.split("//", 1)[0]


def functions(path):
    lines = path.read_text(encoding="utf-8").splitlines()
    if any("@generated" in l for l in lines[:5]):
        return
    skip_depth = None  # brace depth at which a #[cfg(test)] module ends
    depth = 0
    pending_test = False
    open_fns = []  # (name, start line, depth at which its body opened)
    for i, raw in enumerate(lines, 1):
        line = strip_strings(raw)
        if skip_depth is None and re.match(r"^\s*#\[cfg\(test\)\]", raw):
            pending_test = True
        m = FN.match(raw)
        if m and skip_depth is None and not pending_test:
            open_fns.append([m.group(7), i, None])
        for ch in line:
            if ch == "{":
                depth += 1
                if pending_test and skip_depth is None:
                    skip_depth = depth
                    pending_test = False
                for f in open_fns:
                    if f[2] is None:
                        f[2] = depth
                        break
            elif ch == "}":
                if skip_depth is not None and depth == skip_depth:
                    skip_depth = None
                while open_fns and open_fns[-1][2] == depth:
                    name, start, _ = open_fns.pop()
                    yield name, start, i - start + 1
                depth -= 1
            elif ch == ";":
                # A declaration without a body (trait method).
                if open_fns and open_fns[-1][2] is None:
                    open_fns.pop()
        if pending_test and line.strip().endswith(";"):
            pending_test = False


def rust_files(root):
    for p in sorted(root.rglob("*.rs")):
        parts = set(p.parts)
        if parts & {"tests", "benches", "examples", "target", "fuzz"} or p.name == "tests.rs":
            continue
        yield p


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=80)
    ap.add_argument("--comments", action="store_true", help="print comment share per crate")
    ap.add_argument("paths", nargs="*", default=["crates"])
    a = ap.parse_args()
    long = []
    for root in map(pathlib.Path, a.paths):
        for f in rust_files(root):
            for name, start, n in functions(f):
                if n > a.limit:
                    long.append((n, f"{f}:{start}", name))
    for n, where, name in sorted(long, reverse=True):
        print(f"{n:5} {where} {name}")
    if a.comments:
        for root in map(pathlib.Path, a.paths):
            for krate in sorted(p.parent for p in root.glob("*/Cargo.toml")):
                code = comment = 0
                for f in rust_files(krate / "src"):
                    text = f.read_text(encoding="utf-8")
                    body = text.split("#[cfg(test)]\nmod tests", 1)[0]
                    for l in body.splitlines():
                        s = l.strip()
                        if not s:
                            continue
                        if s.startswith("//"):
                            comment += 1
                        else:
                            code += 1
                if code + comment:
                    print(f"{krate.name:24} comments {100 * comment / (code + comment):5.1f} % of {code + comment} lines")
    return 1 if long else 0


if __name__ == "__main__":
    sys.exit(main())
