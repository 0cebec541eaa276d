#!/usr/bin/env python3
"""Builds the committed seed corpora from the real-client fixtures.

Reads crates/midge-codec/tests/fixtures/*.hex (`#` comments, then `<TYPE> <hex>` lines, one
whole packet per line) and writes binary seeds to fuzz/corpus/<target>/seed-<name>:

- one seed per fixture: the packets of that connection concatenated, in the order sent;
- one single-packet seed per packet type and version other than CONNECT (without a CONNECT
  first, the target's version applies), for the decode_* targets;
- a few hand-written server -> client packets, which the fixtures do not record.

decode_v31, decode_v311 and decode_v5 get the fixtures of their version (the fuzz targets
switch to the version a CONNECT names, so a connection is valid input for any of them).
roundtrip gets the connections and the server -> client packets, prefixed with the version selector byte (0 = 3.1, 1 = 3.1.1,
2 = 5.0). Run from anywhere: `python3 fuzz/make_seeds.py`. Existing `seed-*` files that this
script writes are overwritten; `seed-regression-*` files are left alone.
"""

import pathlib
import re

FUZZ = pathlib.Path(__file__).resolve().parent
FIXTURES = FUZZ.parent / "crates" / "midge-codec" / "tests" / "fixtures"
CORPUS = FUZZ / "corpus"

VERSIONS = {"v31": 0, "v311": 1, "v5": 2}
TARGET = {"v31": "decode_v31", "v311": "decode_v311", "v5": "decode_v5"}

# Server -> client packets (the fixtures are client -> server only), as (version, name, hex).
EXTRA = [
    ("v311", "connack", "20020100"),
    ("v311", "suback", "900400010180"),
    ("v311", "unsuback", "b0020005"),
    ("v311", "pingresp", "d000"),
    ("v5", "connack", "200b00000821001422000a2a00"),
    ("v5", "suback", "9005000100" "0201"),
    ("v5", "auth", "f0021800"),
    ("v5", "puback_reason", "4003000110"),
]


def parse(path):
    packets = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, hexdata = line.split(maxsplit=1)
        packets.append((name, bytes.fromhex(hexdata)))
    return packets


def version_of(stem):
    match = re.search(r"_(v31|v311|v5)(?:_|$)", stem)
    if not match:
        raise SystemExit(f"{stem}: no version in the file name")
    return match.group(1)


def write(target, name, data):
    out = CORPUS / target
    out.mkdir(parents=True, exist_ok=True)
    (out / f"seed-{name}").write_bytes(data)


def main():
    singles = {}  # (version, packet type name) -> bytes, first one seen
    for path in sorted(FIXTURES.glob("*.hex")):
        packets = parse(path)
        version = version_of(path.stem)
        stream = b"".join(data for _, data in packets)
        write(TARGET[version], path.stem, stream)
        write("roundtrip", path.stem, bytes([VERSIONS[version]]) + stream)
        for name, data in packets:
            if name != "CONNECT":
                singles.setdefault((version, name.lower()), data)
    for (version, name), data in sorted(singles.items()):
        write(TARGET[version], name, data)
    for version, name, hexdata in EXTRA:
        data = bytes.fromhex(hexdata)
        write(TARGET[version], name, data)
        write("roundtrip", f"{version}-{name}", bytes([VERSIONS[version]]) + data)


if __name__ == "__main__":
    main()
