#!/usr/bin/env python3
"""Picks a small committed corpus: at most LIMIT inputs, chosen greedily to
reach the most coverage features the given corpora reach (a set cover
over libFuzzer's merge control file; in set-cover mode it lists every
feature of each input, not only the new ones).

    fuzz/pick_corpus.py TARGET_BINARY OUT_DIR CORPUS_DIR... [--limit N]

`cargo fuzz cmin` keeps every input that adds a feature: over a thousand
per target after a long run.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("out")
    ap.add_argument("corpora", nargs="+")
    ap.add_argument("--limit", type=int, default=48)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        control = os.path.join(tmp, "control")
        empty = os.path.join(tmp, "empty")
        os.mkdir(empty)
        subprocess.run(
            [args.binary, "-set_cover_merge=1", f"-merge_control_file={control}", empty, *args.corpora],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        lines = open(control).read().splitlines()
        count = int(lines[0])
        files = lines[2 : 2 + count]
        edges = {}
        for line in lines[2 + count :]:
            parts = line.split()
            if parts and parts[0] == "FT":
                edges[int(parts[1])] = set(parts[2:])
    everything = set().union(*edges.values()) if edges else set()
    covered, picked = set(), []
    while len(picked) < args.limit:
        best = max(edges, key=lambda i: (len(edges[i] - covered), -os.path.getsize(files[i])), default=None)
        if best is None or not edges[best] - covered:
            break
        covered |= edges.pop(best)
        picked.append(files[best])
    os.makedirs(args.out, exist_ok=True)
    for old in os.listdir(args.out):
        os.remove(os.path.join(args.out, old))
    for path in picked:
        shutil.copy(path, os.path.join(args.out, os.path.basename(path)))
    print(f"{len(picked)} inputs reach {len(covered)} of {len(everything)} features", file=sys.stderr)


if __name__ == "__main__":
    main()
