#!/usr/bin/env python3
"""Build the training corpora (data/corpus/, not committed) and the held-out prompt sets
(datasets/*.jsonl, committed) from text that exists offline on a Debian machine.

Needs Debian's python3.11-doc, debian-reference-en and doc-debian packages (`just corpora` installs
them) and any CPython 3.11 (its standard library is the code corpus).

  general.txt  English prose: the Debian Reference, the Debian FAQ/constitution/social contract
               texts, and the Python tutorial, FAQ and library-reference prose (reST sources).
  code.txt     Python 3.11 standard-library source, minus tests and minus the held-out modules.
  code-large.txt  (with --large) the Python sources that Debian's python3-* packages install
               (PACKAGES below), deduplicated, minus tests and vendored copies, minus every file
               that contains a held-out prompt or its function body.
  datasets/code-completion.jsonl   function headers + docstrings from the held-out modules.
  datasets/text-continuation.jsonl paragraph openings from the held-out Python HOWTOs.
Nothing in the prompt sets appears in either corpus.
"""
import ast
import glob
import gzip
import json
import os
import re
import hashlib
import sys
import sysconfig

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
CORPUS = os.path.join(ROOT, "data", "corpus")
DATASETS = os.path.join(ROOT, "datasets")
PYDOC = "/usr/share/doc/python3.11/html/_sources"
EOT = "\n<|endoftext|>\n"

HELD_OUT_PACKAGES = ("email", "json", "http", "xml", "urllib", "wsgiref")
HELD_OUT_MODULES = ("statistics.py", "fractions.py", "textwrap.py", "csv.py", "calendar.py", "difflib.py", "shlex.py", "netrc.py")
CODE_LIMIT = 8_000_000  # characters of code corpus

# Debian package -> top-level folder under /usr/lib/python3/dist-packages, with its licence
# (from /usr/share/doc/<package>/copyright).
PACKAGES = {
    "python3-django": ("django", "BSD-3-Clause"),
    "python3-sympy": ("sympy", "BSD-3-Clause"),
    "python3-numpy": ("numpy", "BSD-3-Clause"),
    "python3-scipy": ("scipy", "BSD-3-Clause"),
    "python3-matplotlib": ("matplotlib", "Matplotlib licence (PSF-based)"),
    "python3-sqlalchemy": ("sqlalchemy", "MIT"),
    "python3-twisted": ("twisted", "MIT"),
    "python3-sphinx": ("sphinx", "BSD-2-Clause"),
    "python3-docutils": ("docutils", "public domain / BSD-2-Clause"),
    "python3-pygments": ("pygments", "BSD-2-Clause"),
    "python3-pandas": ("pandas", "BSD-3-Clause"),
    "python3-networkx": ("networkx", "BSD-3-Clause"),
    "python3-requests": ("requests", "Apache-2.0"),
    "python3-setuptools": ("setuptools", "MIT"),
    "python3-jinja2": ("jinja2", "BSD-3-Clause"),
    "python3-werkzeug": ("werkzeug", "BSD-3-Clause"),
    "python3-flask": ("flask", "BSD-3-Clause"),
    "python3-babel": ("babel", "BSD-3-Clause"),
    "python3-pytest": ("_pytest", "MIT"),
    "python3-hypothesis": ("hypothesis", "MPL-2.0"),
    "python3-astropy": ("astropy", "BSD-3-Clause"),
    "python3-skimage": ("skimage", "BSD-3-Clause"),
    "python3-sklearn": ("sklearn", "BSD-3-Clause"),
    "python3-nltk": ("nltk", "Apache-2.0"),
    "python3-tornado": ("tornado", "Apache-2.0"),
    "python3-boto3": ("boto3", "Apache-2.0"),
    "python3-botocore": ("botocore", "Apache-2.0"),
    "python3-mypy": ("mypy", "MIT"),
}
DIST_PACKAGES = "/usr/lib/python3/dist-packages"
MAX_FILE_CHARS = 300_000  # larger files are generated tables (sympy's rubi rules, unicode data)


def read(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        return f.read()


def clean_rst(text):
    """Keep the prose of a reST source: drop directives, their indented bodies, and markup."""
    out, skipping = [], False
    for line in text.splitlines():
        if re.match(r"^\s*\.\. ", line):
            skipping = True
            continue
        if skipping and (line.startswith((" ", "\t")) or not line.strip()):
            continue
        skipping = False
        if re.match(r"^[=\-~^\"'`#*+]{3,}\s*$", line):
            continue
        line = re.sub(r":[a-z:]+:`~?([^`<]*?)(\s*<[^>]*>)?`", r"\1", line)
        line = line.replace("``", "").replace("**", "")
        out.append(line)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip()


def paragraphs(text):
    return [re.sub(r"\s+", " ", p).strip() for p in re.split(r"\n\s*\n", text) if p.strip()]


def general_corpus():
    docs = [read("/usr/share/debian-reference/debian-reference.en.txt.gz")]
    for path in sorted(glob.glob("/usr/share/doc/debian/*.txt*")) + sorted(glob.glob("/usr/share/doc/debian/FAQ/*.txt*")):
        docs.append(read(path))
    for sub in ("tutorial", "faq", "library"):
        for path in sorted(glob.glob(os.path.join(PYDOC, sub, "*.rst.txt"))):
            docs.append(clean_rst(read(path)))
    return EOT.join(d for d in docs if d.strip())


def text_prompts(limit=150):
    prompts = []
    for path in sorted(glob.glob(os.path.join(PYDOC, "howto", "*.rst.txt"))):
        for para in paragraphs(clean_rst(read(path))):
            if len(para) < 240 or not para[0].isupper() or para.count("`") or ">>>" in para:
                continue
            cut = para[:200].rsplit(" ", 1)[0]
            prompts.append(cut)
    step = max(1, len(prompts) // limit)
    return prompts[::step][:limit]


def is_held_out(rel):
    top = rel.split(os.sep)[0]
    return top in HELD_OUT_PACKAGES or rel in HELD_OUT_MODULES


def code_files(stdlib):
    for path in sorted(glob.glob(os.path.join(stdlib, "**", "*.py"), recursive=True)):
        rel = os.path.relpath(path, stdlib)
        parts = rel.split(os.sep)
        if "site-packages" in parts or "test" in parts or "tests" in parts or parts[0].startswith(("idlelib", "lib2to3", "turtledemo")):
            continue
        yield rel, path


def code_prompts(stdlib, limit=150):
    prompts = []
    for rel, path in code_files(stdlib):
        if not is_held_out(rel):
            continue
        source = read(path)
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        lines = source.splitlines()
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or not node.body:
                continue
            doc = node.body[0]
            if not (isinstance(doc, ast.Expr) and isinstance(getattr(doc, "value", None), ast.Constant) and isinstance(doc.value.value, str)):
                continue
            if len(node.body) < 2:
                continue
            text = "\n".join(lines[node.lineno - 1 : doc.end_lineno])
            indent = len(text) - len(text.lstrip())
            text = "\n".join(l[indent:] for l in text.splitlines()) + "\n"
            if 60 <= len(text) <= 350:
                prompts.append((rel, node.name, text))
    step = max(1, len(prompts) // limit)
    return prompts[::step][:limit]


def is_test_or_vendored(rel):
    parts = rel.split(os.sep)
    name = parts[-1]
    skip_dirs = {"test", "tests", "testing", "_vendor", "vendor", "vendored", "externals", "extern"}
    return (
        any(p in skip_dirs for p in parts[:-1])
        or name.startswith("test_")
        or name.endswith("_test.py")
        or name == "conftest.py"
    )


def stripped_lines(text):
    return "\n".join(l.strip() for l in text.splitlines() if l.strip())


def held_out_snippets(stdlib):
    """Each code prompt (header + docstring) and its function's body, as stripped lines: a corpus
    file containing one of them holds a copy of held-out code."""
    snippets = []
    for _rel, _name, text in code_prompts(stdlib):
        snippets.append(stripped_lines(text))
    for rel, path in code_files(stdlib):
        if not is_held_out(rel):
            continue
        source = read(path)
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        lines = source.splitlines()
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and len(node.body) >= 2:
                body = stripped_lines("\n".join(lines[node.body[1].lineno - 1 : node.end_lineno]))
                if len(body) >= 80:  # short bodies ("return self._x") are not evidence of a copy
                    snippets.append(body)
    return snippets


def large_code_corpus(stdlib):
    """The Python sources of the Debian packages in PACKAGES, deduplicated and held-out-free."""
    snippets = held_out_snippets(stdlib)
    seen, docs, dropped = set(), [], {"duplicate": 0, "held-out copy": 0, "too large": 0}
    for package, (top, _licence) in sorted(PACKAGES.items()):
        root = os.path.join(DIST_PACKAGES, top)
        if not os.path.isdir(root):
            sys.exit(f"{root} is missing: install {package} (`just corpora-large` installs them)")
        for path in sorted(glob.glob(os.path.join(root, "**", "*.py"), recursive=True)):
            rel = os.path.relpath(path, DIST_PACKAGES)
            if is_test_or_vendored(rel):
                continue
            text = read(path)
            digest = hashlib.sha256(text.encode()).digest()
            if digest in seen:
                dropped["duplicate"] += 1
                continue
            seen.add(digest)
            if len(text) > MAX_FILE_CHARS:
                dropped["too large"] += 1
                continue
            flat = stripped_lines(text)
            if any(s in flat for s in snippets):
                dropped["held-out copy"] += 1
                continue
            if text.strip():
                docs.append(text)
    print(f"code-large: {len(docs)} files, dropped {dropped}, {len(snippets)} held-out snippets checked")
    return EOT.join(docs)


def main():
    os.makedirs(CORPUS, exist_ok=True)
    os.makedirs(DATASETS, exist_ok=True)
    stdlib = sysconfig.get_paths()["stdlib"]

    general = general_corpus()
    with open(os.path.join(CORPUS, "general.txt"), "w") as f:
        f.write(general)
    code, size = [], 0
    for rel, path in code_files(stdlib):
        if is_held_out(rel) or size > CODE_LIMIT:
            continue
        text = read(path)
        code.append(text)
        size += len(text)
    with open(os.path.join(CORPUS, "code.txt"), "w") as f:
        f.write(EOT.join(code))

    with open(os.path.join(DATASETS, "code-completion.jsonl"), "w") as f:
        for i, (rel, name, text) in enumerate(code_prompts(stdlib)):
            f.write(json.dumps({"id": f"code-{i:03d}", "prompt": text, "source": f"{rel}:{name}"}) + "\n")
    with open(os.path.join(DATASETS, "text-continuation.jsonl"), "w") as f:
        for i, text in enumerate(text_prompts()):
            f.write(json.dumps({"id": f"text-{i:03d}", "prompt": text}) + "\n")
    print(f"general {len(general)} chars, code {size} chars")
    if "--large" in sys.argv[1:]:
        large = large_code_corpus(stdlib)
        with open(os.path.join(CORPUS, "code-large.txt"), "w") as f:
            f.write(large)
        print(f"code-large {len(large)} chars")


if __name__ == "__main__":
    main()
