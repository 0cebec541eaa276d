#!/usr/bin/env python3
"""Regenerates docs/conformance.md: every normative statement cited in the code, with the tests
and the code that cite it.

    python3 docs/gen_conformance.py

A citation inside a test function (or in the comment lines just above it) counts for that
test; a citation elsewhere in library code counts as the place that enforces it.
"""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
CITE = re.compile(r"\[MQTT-(\d+(?:\.\d+)*)-(\d+)\]")
FN = re.compile(r"^\s*(?:pub(?:\([^)]*\))?\s+)?(?:async\s+)?fn\s+(\w+)")


def key(statement):
    section, number = statement
    return [int(p) for p in section.split(".")] + [int(number)]


def scan(path, in_tests):
    """Yields (statement, test-or-code label) for each citation in the file."""
    lines = path.read_text(encoding="utf-8").splitlines()
    rel = path.relative_to(ROOT)
    test_file = in_tests or "/tests/" in str(rel)
    in_test_module = False
    current = None
    pending = []
    for i, line in enumerate(lines):
        if "#[cfg(test)]" in line:
            in_test_module = True
        m = FN.match(line)
        if m:
            current = m.group(1)
            for statement in pending:
                yield statement, (test_file or in_test_module), f"{rel}::{current}"
            pending = []
        for c in CITE.finditer(line):
            statement = (c.group(1), c.group(2))
            if line.strip().startswith("//") and not m:
                # A comment: it belongs to the next function if one follows soon.
                upcoming = any(FN.match(l) for l in lines[i + 1:i + 4])
                if upcoming:
                    pending.append(statement)
                    continue
            yield statement, (test_file or in_test_module), f"{rel}::{current or '(top)'}"


def main():
    tests, code = {}, {}
    for path in sorted(ROOT.glob("crates/*/**/*.rs")):
        if "target" in path.parts:
            continue
        for statement, is_test, label in scan(path, False):
            (tests if is_test else code).setdefault(statement, set()).add(label)
    statements = sorted(set(tests) | set(code), key=key)
    out = [
        "# Conformance map",
        "",
        "Each normative statement of the MQTT 3.1.1 and 5.0 specifications that the code cites,",
        "where it is enforced, and the tests that show it. Statement numbers follow 5.0 where the",
        "two versions differ, unless the code notes the 3.1.1 number. Regenerate with",
        "`python3 docs/gen_conformance.py`.",
        "",
        f"{len(statements)} statements; {sum(1 for s in statements if s in tests)} with tests.",
        "",
        "| statement | enforced in | tests |",
        "|---|---|---|",
    ]
    for s in statements:
        name = f"MQTT-{s[0]}-{s[1]}"
        where = "<br>".join(sorted(code.get(s, []))) or "—"
        shown = "<br>".join(sorted(tests.get(s, []))) or "**none yet**"
        out.append(f"| {name} | {where} | {shown} |")
    (ROOT / "docs" / "conformance.md").write_text("\n".join(out) + "\n", encoding="utf-8")
    print(f"wrote docs/conformance.md: {len(statements)} statements")


if __name__ == "__main__":
    main()
