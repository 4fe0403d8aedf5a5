#!/usr/bin/env python3
"""Summarize an insnprof profile: instructions per vCPU, hypervisor vs guest, and the top
functions (symbols from the built ELFs, via nm). Under -icount shift=3 one instruction is
8 ns of virtual time, shown as ms.

Usage: python3 tools/insnprof/report.py PROFILE [TOP] [NS_PER_INSN]
The hypervisor runs with an identity map, so its blocks share one (host address - vaddr)
offset: the most common one among blocks in the image's range."""
import bisect
import collections
import subprocess
import sys

HYP = 'target/cross/aarch64-unknown-none-softfloat/release/asyncpf-hypervisor'
GUEST = 'target/cross/aarch64-unknown-none/release/asyncpf-guest'


def symbols(elf):
    addrs, names = [], []
    out = subprocess.run(['nm', '-C', '--defined-only', '-n', elf], capture_output=True, text=True, check=True)
    for line in out.stdout.splitlines():
        parts = line.split(' ', 2)
        if len(parts) == 3 and parts[1] in 'tTwW':
            addrs.append(int(parts[0], 16))
            names.append(parts[2])
    return addrs, names


def name(table, pc):
    i = bisect.bisect_right(table[0], pc) - 1
    return table[1][i] if i >= 0 else '?'


def main():
    path = sys.argv[1]
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 40
    ns = float(sys.argv[3]) if len(sys.argv) > 3 else 8.0
    per_vcpu, blocks = {}, []
    for line in open(path):
        p = line.split()
        if p[0] == 'vcpu':
            per_vcpu[int(p[1])] = int(p[2])
        else:
            blocks.append((int(p[1], 16), int(p[2], 16), int(p[3]), int(p[4])))
    hyp_offset = collections.Counter(h - v for v, h, _, _ in blocks if v < 0x40400000).most_common(1)[0][0]
    hyp, guest = symbols(HYP), symbols(GUEST)
    ms = lambda insns: insns * ns / 1e6
    total = sum(per_vcpu.values())
    print(f'total {total} instructions = {ms(total):.0f} ms; per vCPU ' +
          ', '.join(f'{v}: {ms(n):.0f} ms' for v, n in sorted(per_vcpu.items())))
    by_side, by_fn = collections.Counter(), collections.Counter()
    for vaddr, haddr, insns, execs in blocks:
        side = 'hyp' if haddr - vaddr == hyp_offset else 'guest'
        by_side[side] += insns * execs
        by_fn[f"{side:5} {name(hyp if side == 'hyp' else guest, vaddr)}"] += insns * execs
    print(', '.join(f'{side} {ms(n):.0f} ms' for side, n in by_side.items()))
    for fn, n in by_fn.most_common(top):
        print(f'{ms(n):9.1f} ms  {fn[:120]}')


if __name__ == '__main__':
    main()
