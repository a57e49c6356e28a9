#!/usr/bin/python3
"""Inspects every corpus object with bpfgate and checks its report against llvm-objdump's reading of the object.

    corpus/crosscheck.py [--bpfgate PATH] [--objdump PATH] [--tsv OUT.tsv] [OBJECT...]

Defaults: target/release/bpfgate, llvm-objdump-19, every *.o and *.elf under corpus/{deb,embedded,src}.

The independent reading, from `llvm-objdump -t` (symbols), `-h` (which sections hold code) and `-dr` (raw
instruction bytes and relocations), with no part of bpfgate:
  - programs: the FUNC and GLOBAL/WEAK NOTYPE symbols in executable sections other than .text (the loaders' rule,
    docs/loaders.md), or one per executable section that has none (one per start address);
  - per program, the helper ids called (BPF_CALL with src_reg 0 and no relocation), whether a kfunc is called
    (src_reg 2, or a call relocated against an undefined symbol), and tail_call (helper 12), over the program and
    every subprogram it reaches: BPF_CALL with src_reg 1 (pc-relative, or through an R_BPF_64_32 relocation) and
    callback references (ld_imm64 with src_reg 4, or relocated against a symbol in an executable section).

Per object it prints exit status, error count, programs reported/expected, and each disagreement. Exit 0 always
(this is a survey of today's behaviour, not a test); --tsv writes one line per object.
"""
import argparse
import collections
import json
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def objdump(tool, args, path):
    r = subprocess.run([tool, *args, path], capture_output=True, text=True)
    return r.stdout, r.returncode, r.stderr


def big_endian(path):
    with open(path, "rb") as f:
        head = f.read(6)
    return len(head) == 6 and head[5] == 2


def read_object(tool, path):
    """(programs, funcs, insns) from llvm-objdump, or None when it cannot read the object."""
    out, rc, _ = objdump(tool, ["-h"], path)
    if rc != 0:
        return None
    exec_sections = set()
    for line in out.splitlines():
        m = re.match(r"\s*\d+\s+(\S+)\s+[0-9a-f]+\s+[0-9a-f]+\s+(.*)$", line)
        if m and "TEXT" in m.group(2):
            exec_sections.add(m.group(1))
    out, rc, _ = objdump(tool, ["-t"], path)
    funcs = collections.defaultdict(list)  # section -> [(start_insn, end_insn, name, is_global)]
    symvals = {}  # symbol name -> (section, byte value)
    for line in out.splitlines():
        m = re.match(r"([0-9a-f]{16}) (.{7}) (\S+)\s+([0-9a-f]{16}) (.*)$", line)
        if not m:
            continue
        value, flags, sect, size, name = int(m.group(1), 16), m.group(2), m.group(3), int(m.group(4), 16), m.group(5)
        name = re.sub(r"^\.(hidden|protected|internal) ", "", name)  # visibility, printed before the name
        symvals.setdefault(name, (sect, value))
        # Functions as the loaders take them (docs/loaders.md): FUNC symbols, and the GLOBAL/WEAK NOTYPE symbols
        # LLVM before 8 wrote for functions.
        if (flags[6] == "F" or (flags[6] == " " and flags[0] in "gw")) and sect in exec_sections:
            funcs[sect].append((value // 8, (value + size) // 8, name, flags[0] == "g"))
        if flags[6] == "d":
            symvals[sect] = (sect, 0)
    # Instructions per section: index -> (opcode, src, imm, reloc symbol or None)
    be = big_endian(path)
    insns = collections.defaultdict(dict)
    out, rc, _ = objdump(tool, ["-dr"], path)
    sect = None
    last = None
    for line in out.splitlines():
        m = re.match(r"Disassembly of section (.*):$", line)
        if m:
            sect = m.group(1)
            continue
        m = re.match(r"\s+(\d+):\t((?:[0-9a-f]{2}[ \t]){8})", line)
        if m and sect:
            b = bytes.fromhex(re.sub(r"\s", "", m.group(2)))
            src = (b[1] & 0x0F) if be else (b[1] >> 4)
            imm = int.from_bytes(b[4:8], "big" if be else "little", signed=True)
            last = (sect, int(m.group(1)))
            insns[sect][last[1]] = [b[0], src, imm, None]
            continue
        m = re.match(r"\s+[0-9a-f]+:\s+(R_BPF_\S+)\s+(\S+)", line)
        if m and last:
            insns[last[0]][last[1]][3] = m.group(2)
    programs = []
    for s in sorted(exec_sections):
        if s == ".text" or not insns.get(s):
            continue
        if funcs.get(s):
            starts = {}
            for start, _e, name, _g in sorted(funcs[s]):
                starts.setdefault(start, name)
            programs += [(s, name, start) for start, name in sorted(starts.items())]
        else:
            programs.append((s, s, 0))
    return programs, funcs, insns, symvals, exec_sections


def reach(obj, sect, start):
    """Helpers, kfunc presence and reached functions from the function at (sect, start)."""
    _programs, funcs, insns, symvals, exec_sections = obj

    def func_range(s, at):
        for a, e, name, _g in funcs.get(s, []):
            if e == a:  # size 0 (LLVM before 8): up to the next symbol
                e = min([b for b, _e, _n, _g in funcs.get(s, []) if b > a] or [max(insns.get(s, {a: 0})) + 1])
            if a <= at < e:
                return a, e, name
        # No symbol: the whole section.
        idx = sorted(insns.get(s, {}))
        return (idx[0], idx[-1] + 1, s) if idx else (at, at, s)
    helpers, kfunc, seen, todo = set(), False, set(), [(sect, start)]
    while todo:
        s, at = todo.pop()
        a, e, _name = func_range(s, at)
        if (s, a) in seen:
            continue
        seen.add((s, a))
        for i in range(a, e):
            ins = insns.get(s, {}).get(i)
            if not ins:
                continue
            op, src, imm, rel = ins
            ts, tv = symvals.get(rel, (None, 0)) if rel else (None, 0)
            if op == 0x85 and (src == 2 or ts == "*UND*"):
                kfunc = True  # a kfunc: src_reg 2 once linked, a call relocated against an undefined symbol before
            elif op == 0x85 and src == 0 and not rel:
                helpers.add(imm)
            elif op == 0x85 and src == 1:
                if rel:
                    if ts:
                        todo.append((ts, tv // 8 + imm + 1))
                else:
                    todo.append((s, i + imm + 1))
            elif op == 0x18 and src == 4 and not rel:
                todo.append((s, i + imm + 1))
            elif op == 0x18 and rel and ts in exec_sections:
                # A callback (bpf_loop, timers, ...): ld_imm64 relocated against code; libbpf makes it src_reg 4.
                todo.append((ts, (tv + imm) // 8))
    return helpers, kfunc


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bpfgate", default=os.path.join(HERE, "..", "target", "release", "bpfgate"))
    ap.add_argument("--objdump", default="llvm-objdump-19")
    ap.add_argument("--tsv")
    ap.add_argument("objects", nargs="*")
    a = ap.parse_args()
    objs = a.objects or sorted(
        os.path.relpath(os.path.join(d, f))
        for top in ("deb", "embedded", "src")
        for d, _, fs in os.walk(os.path.join(HERE, top))
        for f in fs
        if f.endswith((".o", ".elf"))
    )
    rows = []
    totals = collections.Counter()
    for path in objs:
        r = subprocess.run([a.bpfgate, "inspect", "--format", "json", path], capture_output=True, text=True)
        try:
            rep = json.loads(r.stdout)
        except ValueError:
            rep = {"programs": [], "errors": [f"no JSON: {r.stderr.strip()[:200]}"]}
        errors = [e["message"] if isinstance(e, dict) else e for e in rep.get("errors", [])]
        got = {(p["section"], p["name"]): p for p in rep["programs"]}
        obj = read_object(a.objdump, path)
        notes = []
        expected = 0
        if obj is None:
            notes.append("llvm-objdump cannot read it")
        else:
            expected = len(obj[0])
            for s, name, start in obj[0]:
                p = got.get((s, name))
                if p is None:
                    notes.append(f"program {s}/{name} not reported")
                    totals["programs lost"] += 1
                    continue
                helpers, kfunc = reach(obj, s, start)
                mine = {h["id"] for h in p["helpers"]}
                if mine != helpers:
                    notes.append(f"{s}/{name}: helpers bpfgate-only {sorted(mine - helpers)}, objdump-only {sorted(helpers - mine)}")
                    totals["helper disagreements"] += 1
                if bool(p["kfuncs"]) != kfunc:
                    notes.append(f"{s}/{name}: kfuncs reported {len(p['kfuncs'])}, objdump sees kfunc call: {kfunc}")
                    totals["kfunc disagreements"] += 1
                if (12 in helpers) != bool(p["tail_calls"]) and 12 in helpers:
                    notes.append(f"{s}/{name}: calls tail_call but no tail_calls reported")
                totals["programs checked"] += 1
            extra = set(got) - {(s, n) for s, n, _ in obj[0]}
            for s, n in sorted(extra):
                notes.append(f"program {s}/{n} reported but not a FUNC in an executable section")
        unspec = sum(1 for p in rep["programs"] if p["prog_type"] == "unspec")
        totals["objects"] += 1
        totals["exit 0"] += r.returncode == 0
        totals["objects with errors"] += bool(errors)
        totals["programs reported"] += len(rep["programs"])
        totals["programs unspec"] += unspec
        row = (path, r.returncode, len(errors), len(rep["programs"]), expected, unspec,
               " | ".join(errors + notes).replace("\t", " ").replace("\n", " "))
        rows.append(row)
        if r.returncode or errors or notes:
            print(f"{path}: exit {r.returncode}, {len(errors)} errors, {len(rep['programs'])}/{expected} programs, {unspec} unspec")
            for e in errors:
                print(f"    error: {e}")
            for n in notes:
                print(f"    {n}")
    if a.tsv:
        with open(a.tsv, "w") as f:
            f.write("# object\texit\terrors\tprograms reported\tprograms expected\tunspec\tnotes\n")
            for row in rows:
                f.write("\t".join(map(str, row)) + "\n")
    print("summary: " + ", ".join(f"{k} {v}" for k, v in sorted(totals.items())))


if __name__ == "__main__":
    main()
