#!/usr/bin/env python3
"""The `use` graph between the files of src/mpc (or another module tree), and its cycles.

An edge a -> b means that file a names something of file b in code: a `use super::...` or
`use crate::mpc::...` line (use trees with braces included), or a `super::x::...` /
`crate::mpc::x::...` path in an expression. Comments and string literals are skipped. `super`
inside an inline module (`mod tests { .. }`) is that module's parent, i.e. the file itself.

A folder's mod.rs is a facade: its `pub use x::{..}` lines are aliases, not edges, so a path
through a re-exported name (`crate::mpc::CLIENT`, `super::mul_many`) counts as an edge to the
file that defines it; code of the mod.rs itself that uses such a name is an edge to that file.

Usage: scripts/use_graph.py [--root src/mpc] [--crate-path mpc] [--edges] [--no-tests]
Prints the cycles (strongly connected components) with the lines that make them; exits 1 if
there is any, 0 otherwise.
"""

import argparse
import os
import re
import sys
from collections import defaultdict


def strip_comments_and_strings(text):
    """The text with comments and string/char literals blanked (newlines kept, so that line
    numbers stay)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            hashes = re.match(r"r(#*)\"", text[i:]).group(1)
            end = text.find('"' + hashes, i + 2 + len(hashes))
            end = n if end < 0 else end + 1 + len(hashes)
            out.append(re.sub(r"[^\n]", " ", text[i:end]))
            i = end
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            j = min(j + 1, n)
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "'":
            # A char literal ('a', '\n', '\u{..}'), not a lifetime ('a without a closing quote).
            m = re.match(r"'(\\[^']*|[^'\\\n])'", text[i:])
            if m:
                out.append(" " * len(m.group(0)))
                i += len(m.group(0))
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def parse_use_tree(tree):
    """`a::{b, c::{self, d}}` -> [[a, b], [a, c], [a, c, d]] (`self` names its parent)."""
    tree = re.sub(r"\s+", "", tree)
    paths = []

    def walk(s, prefix):
        # Split s at top-level commas.
        parts, depth, start = [], 0, 0
        for k, ch in enumerate(s):
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            elif ch == "," and depth == 0:
                parts.append(s[start:k])
                start = k + 1
        parts.append(s[start:])
        for part in parts:
            if not part:
                continue
            if "{" in part:
                head, rest = part.split("{", 1)
                head = [h for h in head.split("::") if h]
                walk(rest[: rest.rindex("}")], prefix + head)
            else:
                part = re.sub(r"\bas\w+$", "", part)  # `x as y` (spaces removed)
                segs = [s for s in part.split("::") if s]
                if segs == ["self"]:
                    paths.append(prefix)
                elif segs and segs[-1] == "*":
                    paths.append(prefix + segs[:-1])
                else:
                    paths.append(prefix + segs)

    walk(tree, [])
    return paths


class File:
    def __init__(self, path, module, is_mod):
        self.path = path
        self.module = module  # ("mpc", "protocols", "round")
        self.is_mod = is_mod
        raw = open(path, encoding="utf-8").read()
        self.code = strip_comments_and_strings(raw)


def inline_modules(code):
    """(start, end, name) of each inline `mod name { .. }` block, outermost first."""
    spans = []
    for m in re.finditer(r"\bmod\s+(\w+)\s*\{", code):
        depth, j = 1, m.end()
        while j < len(code) and depth:
            if code[j] == "{":
                depth += 1
            elif code[j] == "}":
                depth -= 1
            j += 1
        spans.append((m.start(), j, m.group(1)))
    return spans


def test_spans(code):
    """Spans of items under #[cfg(test)] (their inline modules)."""
    spans = []
    for m in re.finditer(r"#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{", code):
        depth, j = 1, m.end()
        while j < len(code) and depth:
            if code[j] == "{":
                depth += 1
            elif code[j] == "}":
                depth -= 1
            j += 1
        spans.append((m.start(), j))
    return spans


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = os.path.dirname(os.path.abspath(__file__))
    default_root = os.path.relpath(os.path.join(here, "..", "src", "mpc"))
    ap.add_argument("--root", default=default_root, help="the module folder to analyse (default: src/mpc)")
    ap.add_argument("--crate-path", default=None, help="its path from the crate root (default: the folder under src/)")
    ap.add_argument("--edges", action="store_true", help="print every edge")
    ap.add_argument("--no-tests", action="store_true", help="skip #[cfg(test)] modules")
    args = ap.parse_args()

    root = os.path.normpath(args.root)
    src = os.path.dirname(root)
    base = tuple((args.crate_path or os.path.relpath(root, src)).split("::"))
    base = tuple(base[0].split(os.sep)) if len(base) == 1 else base

    files = {}
    for dirpath, _, names in os.walk(root):
        for name in sorted(names):
            if not name.endswith(".rs"):
                continue
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)[:-3].split(os.sep)
            is_mod = rel[-1] == "mod"
            if is_mod:
                rel = rel[:-1]
            module = base + tuple(rel)
            files[module] = File(path, module, is_mod)

    # Re-exports of each mod.rs: name -> the module path it names (resolved later).
    reexports = defaultdict(dict)
    use_re = re.compile(r"\b(pub(?:\([^)]*\))?\s+)?use\s+([^;]+);", re.S)
    for module, f in files.items():
        if not f.is_mod:
            continue
        for m in use_re.finditer(f.code):
            if not m.group(1):
                continue
            for segs in parse_use_tree(m.group(2)):
                full = absolute(segs, module, module)
                if full:
                    reexports[module][segs[-1]] = tuple(full)

    def resolve(full):
        """The file that `full` (an absolute path) names, through facades' re-exports."""
        for _ in range(16):
            k = len(full)
            while k > 0 and tuple(full[:k]) not in files:
                k -= 1
            if k == 0:
                return None
            module = tuple(full[:k])
            rest = full[k:]
            if rest and files[module].is_mod and rest[0] in reexports[module]:
                target = reexports[module][rest[0]]
                if tuple(target) == tuple(full[: k + 1]):
                    return module
                full = list(target) + list(rest[1:])
                continue
            return module
        return None

    edges = defaultdict(list)  # (a, b) -> [(file, line, text)]
    path_re = re.compile(r"(?<![\w:])((?:super::)+\w+(?:::\w+)*|crate::\w+(?:::\w+)*|self::\w+(?:::\w+)*)")
    for module, f in files.items():
        code = f.code
        inline = inline_modules(code)
        tests = test_spans(code) if args.no_tests else []

        def context(pos):
            """The module path at `pos` (the file's, plus inline modules around pos)."""
            ctx = list(module)
            for s, e, name in inline:
                if s < pos < e:
                    ctx.append(name)
            return tuple(ctx)

        def in_tests(pos):
            return any(s <= pos < e for s, e in tests)

        def line_of(pos):
            return code.count("\n", 0, pos) + 1

        raw_lines = open(f.path, encoding="utf-8").read().split("\n")
        use_spans = []
        for m in use_re.finditer(code):
            use_spans.append((m.start(), m.end()))
            if in_tests(m.start()) or m.group(1) and f.is_mod:
                continue  # a facade's re-exports are aliases
            for segs in parse_use_tree(m.group(2)):
                add_edge(edges, files, resolve, segs, context(m.start()), module, f, line_of(m.start()), raw_lines)
        for m in path_re.finditer(code):
            if any(s <= m.start() < e for s, e in use_spans) or in_tests(m.start()):
                continue
            segs = m.group(1).split("::")
            add_edge(edges, files, resolve, segs, context(m.start()), module, f, line_of(m.start()), raw_lines)
        if f.is_mod:
            # The facade's own code using the names it re-exports.
            body = code
            for s, e in reversed(use_spans):
                body = body[:s] + re.sub(r"[^\n]", " ", body[s:e]) + body[e:]
            for name, target in reexports[module].items():
                for m in re.finditer(r"(?<![\w:])%s\b" % re.escape(name), body):
                    b = resolve(list(target))
                    if b and b != module and not in_tests(m.start()):
                        line = line_of(m.start())
                        edges[(module, b)].append((f.path, line, raw_lines[line - 1].strip()))

    graph = defaultdict(set)
    for a, b in edges:
        graph[a].add(b)

    name = lambda m: "::".join(m)
    if args.edges:
        for (a, b), where in sorted(edges.items()):
            print(f"{name(a)} -> {name(b)}   ({where[0][0]}:{where[0][1]})")

    cycles = [c for c in tarjan(files.keys(), graph) if len(c) > 1]
    if not cycles:
        print(f"{len(files)} files, {len(edges)} edges under {root}: no cycle")
        return 0
    for comp in cycles:
        members = set(comp)
        print(f"cycle among {len(comp)} files: " + ", ".join(sorted(name(m) for m in comp)))
        for (a, b), where in sorted(edges.items()):
            if a in members and b in members:
                path, line, text = where[0]
                print(f"  {name(a)} -> {name(b)}   {path}:{line}: {text}")
    print(f"{len(cycles)} cycle(s)")
    return 1


def absolute(segs, context, file_module):
    """The absolute path (from the crate root) of a path written in module `context`."""
    segs = list(segs)
    if not segs:
        return None
    if segs[0] == "crate":
        return segs[1:]
    if segs[0] == "self":
        return list(context) + segs[1:]
    if segs[0] == "super":
        ctx = list(context)
        while segs and segs[0] == "super":
            ctx = ctx[:-1]
            segs = segs[1:]
        return ctx + segs
    # A path relative to the current module (a facade's `pub use child::x`), or an extern crate.
    return list(context) + segs


def add_edge(edges, files, resolve, segs, context, module, f, line, raw_lines):
    if segs[0] not in ("crate", "super", "self"):
        # A relative path: only a child module of this file counts (`use compare::x` in a mod.rs).
        if not f.is_mod or tuple(module) + (segs[0],) not in files:
            return
    full = absolute(segs, context, module)
    if full is None:
        return
    b = resolve(full)
    if b is None or b == module:
        return
    edges[(module, b)].append((f.path, line, raw_lines[line - 1].strip()))


def tarjan(nodes, graph):
    index, low, on, stack, out = {}, {}, set(), [], []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(comp)

    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


if __name__ == "__main__":
    sys.exit(main())
