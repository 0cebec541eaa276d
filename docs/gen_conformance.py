#!/usr/bin/env python3
"""Generates docs/conformance.md, the conformance matrix: one table per MQTT version with a row
for every normative statement of the standard, the tests that check it and its status.

    python3 docs/gen_conformance.py                      # rewrite docs/conformance.md
    python3 docs/gen_conformance.py --check --tests LIST # CI: fail on any drift (see below)

Inputs:
  docs/spec/mqtt-3.1.1-statements.tsv, docs/spec/mqtt-5.0-statements.tsv
      every numbered statement of each standard: id, section, binds, summary
  docs/spec/not-applicable.tsv   version, id, reason   (statements midge does not implement)
  docs/spec/failing.tsv          version, id, issue    (statements midge is known to break)
  the tags in the tests (crates/*/src, crates/*/tests):

      // [MQTT-5:3.3.1-4]        statement 3.3.1-4 of MQTT 5.0
      // [MQTT-3.1.1:3.3.1-4]    statement 3.3.1-4 of MQTT 3.1.1

  A tag belongs to the test function whose body holds it, or to the function that directly
  follows the comment or attribute lines it stands in. The unversioned `[MQTT-x.y.z-n]` form
  is a citation for readers and is not counted: the two standards number their statements
  differently, so a bare number does not say which statement it means.

A statement's status is `passing` when at least one test carries its tag, `failing` when
failing.tsv lists it, `not applicable` when not-applicable.tsv lists it, and `uncovered`
otherwise.

--check LIST, where LIST is the output of
    cargo test --workspace --all-features --locked --lib --bins --tests -- --list 2>&1
(run after the test step has passed, so every test listed has just passed), fails when:
  - a tag names a statement that is not in the standard's list;
  - a tagged function is not a test that the test step runs (it does not exist, it is not a
    test, or it is not built by the test command);
  - a statement marked passing is shown by a test that is #[ignore]d;
  - a statement's row count differs from the standard's statement count (141 and 251), or
    not-applicable.tsv or failing.tsv name a statement that is not in the list, or name one
    that also has a passing test;
  - docs/conformance.md differs from what this script generates (regenerate and commit).
"""
import argparse
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
SPEC = ROOT / "docs" / "spec"
OUT = ROOT / "docs" / "conformance.md"

# version key -> (title, statements file, count in the standard's appendix B)
VERSIONS = {
    "3.1.1": ("MQTT 3.1.1", SPEC / "mqtt-3.1.1-statements.tsv", 141),
    "5": ("MQTT 5.0", SPEC / "mqtt-5.0-statements.tsv", 251),
}
TAG = re.compile(r"\[MQTT-(3\.1\.1|5(?:\.0)?):(\d+(?:\.\d+)*-\d+)\]")
FN = re.compile(r"^\s*(?:pub(?:\([^)]*\))?\s+)?(?:async\s+)?fn\s+(\w+)")
PREAMBLE = re.compile(r"^\s*(//|#\[|#!\[|\*|/\*|$)")
RUNNING = re.compile(r"^\s*Running (unittests )?(\S+) \((?:.*[/\\])?deps[/\\]([A-Za-z0-9_]+)-[0-9a-f]+")
LISTED = re.compile(r"^(\S+): test$")


def version_key(v):
    return "5" if v.startswith("5") else v


def read_tsv(path, columns):
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if n == 1 or not line.strip() or line.startswith("#"):
            continue
        cells = line.split("\t")
        if len(cells) != columns:
            sys.exit(f"{path.relative_to(ROOT)}:{n}: expected {columns} tab-separated columns")
        rows.append(cells)
    return rows


def crate_dirs():
    """Maps a crate's library name (midge_codec) to its directory."""
    dirs = {}
    for manifest in list(ROOT.glob("crates/*/Cargo.toml")) + [ROOT / "benches" / "Cargo.toml"]:
        if not manifest.exists():
            continue
        m = re.search(r'^name\s*=\s*"([^"]+)"', manifest.read_text(encoding="utf-8"), re.M)
        if m:
            dirs[m.group(1).replace("-", "_")] = manifest.parent
    return dirs


def test_binary(path):
    """(crate dir, binary) for a source file: binary is 'lib', 'bin' or the test file's stem."""
    rel = path.relative_to(ROOT)
    parts = rel.parts
    crate = ROOT.joinpath(*parts[:2])
    if parts[2] == "tests":
        return crate, pathlib.Path(parts[3]).stem
    if parts[2] == "src" and parts[-1] == "main.rs" and len(parts) == 4:
        return crate, "bin"
    return crate, "lib"


def module_prefix(path):
    """The module path of a src file inside its crate: src/wire.rs -> 'wire::'."""
    parts = list(path.relative_to(ROOT).parts[3:])
    if not parts:
        return ""
    last = pathlib.Path(parts[-1]).stem
    mods = parts[:-1] + ([] if last in ("lib", "main", "mod") else [last])
    return "".join(f"{m}::" for m in mods)


def scan(path):
    """Yields (version, statement, function, ignored, line) for each versioned tag."""
    lines = path.read_text(encoding="utf-8").splitlines()
    fns = []  # (line index, name, ignored)
    for i, line in enumerate(lines):
        m = FN.match(line)
        if m:
            j, ignored = i - 1, False
            while j >= 0 and PREAMBLE.match(lines[j]) and lines[j].strip():
                if re.match(r"^\s*#\[ignore", lines[j]):
                    ignored = True
                j -= 1
            fns.append((i, m.group(1), ignored))
    for i, line in enumerate(lines):
        for tag in TAG.finditer(line):
            owner = None
            if PREAMBLE.match(line) and not FN.match(line):
                # In a comment or attribute: the function right after the block, if any.
                k = i + 1
                while k < len(lines) and PREAMBLE.match(lines[k]) and lines[k].strip():
                    k += 1
                owner = next((f for f in fns if f[0] == k), None)
            if owner is None:
                earlier = [f for f in fns if f[0] <= i]
                owner = earlier[-1] if earlier else None
            yield (version_key(tag.group(1)), f"MQTT-{tag.group(2)}", owner, i + 1)


def parse_test_list(text):
    """Returns {(crate dir, binary): set(test names)} from `cargo test -- --list` output."""
    dirs = crate_dirs()
    tests, current, crate = {}, None, None
    for line in text.splitlines():
        r = RUNNING.match(line)
        if r:
            unittests, src, deps = r.groups()
            if unittests:
                crate = dirs.get(deps)
                if crate is None:  # a bin target named differently from its package
                    crate = next((d for d in dirs.values() if (d / src).exists()), None)
                current = (crate, "bin" if src.endswith("main.rs") or "/bin/" in src else "lib")
            else:
                stem = pathlib.Path(src).stem if src.endswith(".rs") else pathlib.Path(src).parent.name
                owners = [d for d in dirs.values() if (d / src).exists()]
                if len(owners) == 1:
                    crate = owners[0]
                current = (crate, stem)
            tests.setdefault(current, set())
            continue
        m = LISTED.match(line)
        if m and current is not None:
            tests[current].add(m.group(1))
    return tests


def find_test(listed, path, fn):
    """The listed test name for function fn of file path, or None."""
    names = listed.get(test_binary(path), set())
    if path.relative_to(ROOT).parts[2] == "src":
        prefix = module_prefix(path)
        hits = [n for n in names if n.startswith(prefix) and n.endswith(f"::{fn}")]
    else:
        hits = [n for n in names if n == fn or n.endswith(f"::{fn}")]
    return hits[0] if len(hits) == 1 else (sorted(hits)[0] if hits else None)


def collect():
    statements, tags = {}, []
    for v, (_, path, _) in VERSIONS.items():
        statements[v] = read_tsv(path, 4)
    files = sorted(p for p in ROOT.glob("crates/*/**/*.rs") if "target" not in p.parts)
    for path in files:
        for v, sid, owner, line in scan(path):
            tags.append((v, sid, path, owner, line))
    na = read_tsv(SPEC / "not-applicable.tsv", 3) if (SPEC / "not-applicable.tsv").exists() else []
    failing = read_tsv(SPEC / "failing.tsv", 3) if (SPEC / "failing.tsv").exists() else []
    return statements, tags, na, failing


def build(statements, tags, na, failing, errors):
    known = {v: {row[0] for row in rows} for v, rows in statements.items()}
    tested = {v: {} for v in VERSIONS}
    for v, sid, path, owner, line in tags:
        where = f"{path.relative_to(ROOT)}:{line}"
        if sid not in known[v]:
            errors.append(f"{where}: [{sid}] is not a statement of {VERSIONS[v][0]}")
            continue
        if owner is None:
            errors.append(f"{where}: tag for {sid} stands outside any function")
            continue
        label = f"{path.relative_to(ROOT).as_posix().removeprefix('crates/')}::{owner[1]}"
        tested[v].setdefault(sid, {})[label] = (path, owner)
    notes = {}
    for kind, rows in (("not applicable", na), ("failing", failing)):
        for v, sid, text in rows:
            v = version_key(v)
            if v not in VERSIONS or sid not in known[v]:
                errors.append(f"docs/spec/{kind.replace(' ', '-')}: {v} {sid} is not a statement")
                continue
            notes[(v, sid)] = (kind, text)
    out = [
        "# Conformance matrix",
        "",
        "Every numbered normative statement of MQTT 3.1.1 and MQTT 5.0, what it asks of whom, the",
        "tests that check it, and its status. Generated by `python3 docs/gen_conformance.py` from",
        "`docs/spec/` (the statement lists, with the reasons for statements that are not applicable",
        "and the known failures) and from the tags in the tests: a test that checks statement",
        "3.3.1-4 of MQTT 5.0 carries `[MQTT-5:3.3.1-4]` in its body or in the comment above it, and",
        "`[MQTT-3.1.1:3.3.1-4]` for MQTT 3.1.1. `.ci/run` runs the script with `--check` after the",
        "test step, so every test named here exists, ran and passed, and this file cannot drift",
        "from the tags. Summaries are ours; read the standard for the normative text.",
        "",
    ]
    summary = ["| version | statements | passing | not applicable | failing | uncovered |",
               "|---|---|---|---|---|---|"]
    tables = []
    for v, (title, path, expected) in VERSIONS.items():
        rows = statements[v]
        if len(rows) != expected:
            errors.append(f"{path.relative_to(ROOT)}: {len(rows)} statements, the standard has {expected}")
        counts = {"passing": 0, "not applicable": 0, "failing": 0, "uncovered": 0}
        table = [f"## {title}", "",
                 "| statement | section | binds | summary | tests | status |",
                 "|---|---|---|---|---|---|"]
        for sid, section, binds, text in rows:
            shown = tested[v].get(sid, {})
            note = notes.get((v, sid))
            if note and note[0] == "failing":
                status = f"failing: {note[1]}"
                counts["failing"] += 1
            elif shown:
                if note:
                    errors.append(f"{v} {sid}: has passing tests but not-applicable.tsv lists it")
                for label, (tpath, owner) in shown.items():
                    if owner[2]:
                        errors.append(f"{v} {sid}: cited test {label} is #[ignore]d")
                status = "passing"
                counts["passing"] += 1
            elif note:
                status = f"not applicable: {note[1]}"
                counts["not applicable"] += 1
            else:
                status = "**uncovered**"
                counts["uncovered"] += 1
            names = "<br>".join(f"`{t}`" for t in sorted(shown)) or "—"
            table.append(f"| {sid} | {section} | {binds} | {text} | {names} | {status} |")
        summary.append(f"| {title} | {len(rows)} | {counts['passing']} | {counts['not applicable']} "
                       f"| {counts['failing']} | {counts['uncovered']} |")
        tables += table + [""]
    return "\n".join(out + summary + [""] + tables), tested


def check_tests(tested, listed, errors):
    for v in VERSIONS:
        for sid, shown in tested[v].items():
            for label, (path, owner) in shown.items():
                if find_test(listed, path, owner[1]) is None:
                    errors.append(f"{label} (cited for {VERSIONS[v][0]} {sid}): not a test "
                                  "that the test command runs")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="fail on drift instead of writing")
    ap.add_argument("--tests", help="output of `cargo test ... -- --list 2>&1` ('-' for stdin)")
    args = ap.parse_args()
    errors = []
    statements, tags, na, failing = collect()
    text, tested = build(statements, tags, na, failing, errors)
    if args.tests:
        listing = sys.stdin.read() if args.tests == "-" else pathlib.Path(args.tests).read_text()
        listed = parse_test_list(listing)
        if not any(listed.values()):
            errors.append("the test list is empty: pass the output of `cargo test -- --list 2>&1`")
        check_tests(tested, listed, errors)
    elif args.check:
        errors.append("--check needs --tests: the list of tests the test step ran")
    if args.check:
        if not OUT.exists() or OUT.read_text(encoding="utf-8") != text + "\n":
            errors.append("docs/conformance.md is stale: run `python3 docs/gen_conformance.py` and commit")
    else:
        OUT.write_text(text + "\n", encoding="utf-8")
    for e in errors:
        print(f"conformance: {e}", file=sys.stderr)
    line = text.splitlines()
    start = line.index("| version | statements | passing | not applicable | failing | uncovered |")
    print("\n".join(line[start:start + 4]))
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
