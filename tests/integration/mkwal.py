#!/usr/bin/env python3
"""Write a well-formed synthetic WAL segment for the tests.

Usage: mkwal.py PATH... [--size BYTES] [--sysid N] [--magic 0xD110] [--tli N]
                     [--pageaddr N] [--seed N] [--text TEXT]

The file name (basename of PATH, a segment or .partial name) gives the
timeline and the segment number; the first page gets the long page header
PostgreSQL writes (magic, XLP_LONG_HEADER, xlp_tli, xlp_pageaddr, xlp_sysid,
xlp_seg_size, xlp_xlog_blcksz 8192), little-endian. The rest is zero, or
random bytes from --seed, with --text written right after the header.
Several PATHs: one file each, the i-th (from 0) with seed --seed + i (one
process: python's start is the cost on a loaded machine).
--tli and --pageaddr override what the name says (to craft bad files).
"""
import argparse
import os
import random
import struct

p = argparse.ArgumentParser()
p.add_argument("path", nargs="+")
p.add_argument("--size", type=lambda s: int(s, 0), default=16 << 20)
p.add_argument("--sysid", type=lambda s: int(s, 0), default=7000000000000000001)
p.add_argument("--magic", type=lambda s: int(s, 0), default=0xD110)  # PostgreSQL 15
p.add_argument("--tli", type=lambda s: int(s, 0))
p.add_argument("--pageaddr", type=lambda s: int(s, 0))
p.add_argument("--seed", type=int)
p.add_argument("--text", default="")
a = p.parse_args()

for i, path in enumerate(a.path):
    seed = None if a.seed is None else a.seed + i
    name = os.path.basename(path)[:24]
    tli, log, seg = int(name[0:8], 16), int(name[8:16], 16), int(name[16:24], 16)
    segno = log * (0x100000000 // a.size) + seg
    tli = tli if a.tli is None else a.tli
    pageaddr = segno * a.size if a.pageaddr is None else a.pageaddr

    # XLogLongPageHeaderData: magic, info, tli, pageaddr, rem_len (+4 pad), sysid, seg_size, blcksz
    hdr = struct.pack("<HHIQI4xQII", a.magic, 0x0002, tli, pageaddr, 0, a.sysid, a.size, 8192)
    body = a.text.encode()
    if seed is not None:
        rest = random.Random(seed).randbytes(a.size - len(hdr) - len(body))
    else:
        rest = bytes(a.size - len(hdr) - len(body))
    with open(path, "wb") as f:
        f.write(hdr + body + rest)
