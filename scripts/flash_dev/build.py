"""Compiles every variant with NVRTC into cubins (no GPU needed) and prints
the ptxas resource report: python build.py OUTDIR [--arch sm_90] [--only SUBSTR]."""
import argparse
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nvrtc  # noqa: E402
import variants  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("outdir")
    ap.add_argument("--arch", default="sm_90")
    ap.add_argument("--only", default="", help="substring of the variant names to build")
    ap.add_argument("--names", default="", help="comma-separated exact variant names (instead of --only)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count())
    ap.add_argument("--suffix", default="", help="append to the cubin names; build.json entries of OUTDIR are kept")
    a = ap.parse_args()
    os.makedirs(a.outdir, exist_ok=True)
    allv = {**variants.default_variants(), **variants.tuning_variants(), **variants.experiment_variants()}
    if a.names:
        todo = {k: allv[k] for k in a.names.split(",")}
    else:
        todo = {k: v for k, v in allv.items() if a.only in k}

    def one(item):
        name, defs = item
        try:
            cub, log = nvrtc.compile_cubin(defs, arch=a.arch, extra=["-diag-suppress=177"])
        except RuntimeError as e:
            return name, None, str(e)
        with open(os.path.join(a.outdir, f"{name}{a.suffix}.cubin"), "wb") as f:
            f.write(cub)
        return name, nvrtc.resources(log), None

    report, failed = {}, 0
    old_json = os.path.join(a.outdir, "build.json")
    if a.suffix and os.path.exists(old_json):
        report.update(json.load(open(old_json))["variants"])
    with ThreadPoolExecutor(a.jobs) as ex:
        for name, res, err in ex.map(one, sorted(todo.items())):
            if err:
                failed += 1
                print(f"FAIL {name}\n{err[:3000]}")
                continue
            report[name + a.suffix] = dict(res, defines=todo[name], nvrtc=nvrtc.version())
            print(f"{name:<28} regs {res['regs']:>3} spill {res['spill_stores']:>4} stack {res['stack']:>4}")
    with open(os.path.join(a.outdir, "build.json"), "w") as f:
        json.dump({"nvrtc": nvrtc.version(), "arch": a.arch, "variants": report}, f, indent=1)
    print(f"{len(report)} built, {failed} failed (NVRTC {nvrtc.version()}, {a.arch})")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
