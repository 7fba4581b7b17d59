"""python -m inference.parity GOLDEN.safetensors... [--tolerances tolerances.json] [-v]

One line per file, in the order given: name, PASS/FAIL/ERROR, worst error. Exit status 1 if any case fails or
cannot run. Synthetic models are built once for consecutive files that use the same one (a full-size T3 takes
seconds), so list a decoding case beside the forward case of the same T3 to save the rebuild.
"""
from __future__ import annotations

import argparse
import sys

import torch

from .golden import Tolerances
from .runner import run_file


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m inference.parity", description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="+", help="golden .safetensors files")
    p.add_argument("--tolerances", help="tolerances.json (default: found beside the golden folder)")
    p.add_argument("-v", "--verbose", action="store_true", help="per-tensor errors for passing cases too")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (goldens were made with 2)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    tolerances = Tolerances.load(args.tolerances) if args.tolerances else None
    ok = True
    for path in args.files:
        result = run_file(path, tolerances)
        print(result.summary(), flush=True)
        if result.status != "PASS" or args.verbose:
            for c in result.comparisons:
                mark = "ok  " if c.passed else "FAIL"
                print(f"    {mark} {c.name}: max_abs={c.max_abs:.3g} max_rel={c.max_rel:.3g} {c.detail}".rstrip())
        ok &= result.status == "PASS"
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
