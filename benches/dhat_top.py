#!/usr/bin/env python3
"""Top allocation sites of a dhat-heap.json (written by `examples/scale_heap.rs` under
PROXIER_DHAT=1): bytes live at the global peak, grouped by the first frames inside proxier.

usage: benches/dhat_top.py dhat-heap.json [N] [end]
("end": bytes live when the program ended instead of at the peak)
"""
import json
import re
import sys
from collections import defaultdict


def site(frames, table):
    """The first three frames of ours (proxier, netlink_ipvs, the example), else the first three."""
    names = [table[i] for i in frames]
    ours = [n for n in names if re.search(r"proxier|netlink_ipvs|scale_heap|fake_api|kube_client|kube_runtime", n)
            and "dhat::" not in n]
    chosen = (ours or names)[:3]
    return " <- ".join(re.sub(r"^0x[0-9a-f]+: ", "", n).split(" (")[0] for n in chosen)


def main():
    data = json.load(open(sys.argv[1]))
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    end = len(sys.argv) > 3 and sys.argv[3] == "end"
    size_key, blocks_key, when = ("eb", "ebk", "at the end") if end else ("gb", "gbk", "at the global peak")
    table = data["ftbl"]
    at_peak = defaultdict(int)
    blocks = defaultdict(int)
    for pp in data["pps"]:
        key = site(pp["fs"], table)
        at_peak[key] += pp[size_key]
        blocks[key] += pp[blocks_key]
    total = sum(at_peak.values())
    print(f"live {when}: {total} bytes")
    for key, size in sorted(at_peak.items(), key=lambda kv: -kv[1])[:top]:
        print(f"{size:>12} B {100 * size / total:5.1f}% {blocks[key]:>9} blocks  {key}")


if __name__ == "__main__":
    main()
