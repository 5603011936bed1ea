#!/usr/bin/python3
"""Puts a section into a results file: SECTION.md starts with its '## ' heading; the results file's section of
that heading is replaced (or the section appended), the others kept as they are.
Usage: bench/results_section.py SECTION.md results/FILE.md"""
import re
import sys

section = open(sys.argv[1]).read().rstrip() + "\n"
head = section.splitlines()[0]
try:
    text = open(sys.argv[2]).read()
except FileNotFoundError:
    text = ""
parts = [p for p in re.split(r"(?m)^(?=## )", text) if p and p.splitlines()[0] != head]
out = []
for p in parts:
    out.append(p.rstrip("\n") + "\n\n")
open(sys.argv[2], "w").write("".join(out) + section)
