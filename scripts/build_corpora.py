#!/usr/bin/env python3
"""Build the training corpora (data/corpus/, not committed) and the held-out prompt sets
(datasets/*.jsonl, committed) from text that exists offline on a Debian machine.

Needs Debian's python3.11-doc, debian-reference-en and doc-debian packages (`just corpora` installs
them) and any CPython 3.11 (its standard library is the code corpus).

  general.txt  English prose: the Debian Reference, the Debian FAQ/constitution/social contract
               texts, and the Python tutorial, FAQ and library-reference prose (reST sources).
  code.txt     Python 3.11 standard-library source, minus tests and minus the held-out modules.
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
import sysconfig

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
CORPUS = os.path.join(ROOT, "data", "corpus")
DATASETS = os.path.join(ROOT, "datasets")
PYDOC = "/usr/share/doc/python3.11/html/_sources"
EOT = "\n<|endoftext|>\n"

HELD_OUT_PACKAGES = ("email", "json", "http", "xml", "urllib", "wsgiref")
HELD_OUT_MODULES = ("statistics.py", "fractions.py", "textwrap.py", "csv.py", "calendar.py", "difflib.py", "shlex.py", "netrc.py")
CODE_LIMIT = 8_000_000  # characters of code corpus


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


if __name__ == "__main__":
    main()
