#!/usr/bin/env python3
"""Checks that every CAF `inspect` in actors/messages.h names every data member of its struct.

A member left out of `inspect` crosses a process boundary at its default value, silently: the
head's `graph_warmup_context` reached node processes as 0 for eleven sessions that way
(docs/benchmarks.md, session 20). In-process tests never serialize, so only a check of the
source catches it. A member that must not travel carries the comment `// inspect: local`.

Usage: check_inspect.py [--root DIR] [--messages FILE]
Exit status: 0 every member is inspected; 1 some are not (each named with its file and line);
2 the sources could not be read or a struct was not found.
"""
import argparse
import os
import re
import sys

SEARCH_DIRS = ("actors", "runtime", "parallel", "kernels", "cluster-config")
INSPECT = re.compile(r"inspect\(Inspector& f, (\w+)& x\)\s*\{\s*return f\((.*?)\);\s*\}", re.S)
MEMBER = re.compile(r"^\s*(?!return\b|using\b|static\b|friend\b|typedef\b|public\b|private\b|protected\b)"
                    r"[\w:<>,\s\*&]+?[\s\*&](\w+)\s*(?:=[^;]*|\{[^;]*\})?;")


def headers(root):
    for d in SEARCH_DIRS:
        for dirpath, _, names in os.walk(os.path.join(root, d)):
            for n in names:
                if n.endswith(".h"):
                    yield os.path.join(dirpath, n)


def find_struct(root, name, texts):
    """(path, body lines) of `struct name { ... };`, or None."""
    pattern = re.compile(r"^(struct|class) " + re.escape(name) + r"\b[^;]*\{\s*$", re.M)
    for path in headers(root):
        text = texts.setdefault(path, open(path, encoding="utf-8").read())
        m = pattern.search(text)
        if not m:
            continue
        start = text.count("\n", 0, m.end()) + 1
        lines = text.split("\n")
        body, depth = [], 1
        for i in range(start, len(lines)):
            line = lines[i]
            if depth == 1 and re.match(r"^\};", line):
                return path, body
            body.append((i + 1, line, depth))
            depth += line.count("{") - line.count("}")
        return None
    return None


def members(body):
    """(line number, name) of each data member at the struct's own depth."""
    out = []
    pending = ""
    for lineno, line, depth in body:
        if depth != 1:
            continue
        code = line.split("//")[0]
        if "inspect: local" in line:
            continue
        if "(" in code or code.strip().startswith(("#", "}")) or not code.strip():
            pending = ""
            continue
        pending += " " + code
        if ";" not in code:
            continue
        m = MEMBER.match(pending)
        pending = ""
        if m:
            out.append((lineno, m.group(1)))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--root", default=here)
    ap.add_argument("--messages", default="actors/messages.h")
    a = ap.parse_args()
    try:
        src = open(os.path.join(a.root, a.messages), encoding="utf-8").read()
    except OSError as e:
        print(f"check_inspect: cannot read {a.messages}: {e}", file=sys.stderr)
        return 2
    texts, missing, checked, status = {}, [], 0, 0
    for name, args in INSPECT.findall(src):
        found = find_struct(a.root, name, texts)
        if found is None:
            print(f"check_inspect: {a.messages} inspects {name}, but no header under "
                  f"{', '.join(SEARCH_DIRS)} defines `struct {name} {{`", file=sys.stderr)
            status = 2
            continue
        path, body = found
        named = set(re.findall(r"x\.(\w+)", args))
        checked += 1
        for lineno, member in members(body):
            if member not in named:
                missing.append(f"{os.path.relpath(path, a.root)}:{lineno}: {name}::{member} is not in its "
                               f"inspect ({a.messages}): it would cross a process at its default")
    for m in missing:
        print(m, file=sys.stderr)
    if missing:
        return 1
    print(f"check_inspect: {checked} structs, every member inspected")
    return status


if __name__ == "__main__":
    sys.exit(main())
