"""Run every study, one after the other, then render the report.

    python experiments/run_all.py [--quick] [--only NAME ...] --out DIR

Each study writes DIR/<name>/ (figures, arrays.npz, verdicts.json); the page is DIR/report.html
(self-contained) and DIR/report.md. Wall times are printed and written to DIR/times.json.
"""

import argparse
import json
import os
import subprocess
import sys
import time

STUDIES = [
    "hb_vs_epoch",
    "nag_vs_epoch",
    "hb_width",
    "nag_width",
    "ode_limit",
    "nag_exponents",
    "nag_gradient_norms",
    "nag_crossover",
    "nag_restart",
    "control_view",
    "deep_mlp_width",
    "batch_size",
    "adam_width",
    "finite_width",
    "catapult",
]
HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", nargs="*", choices=STUDIES, help="run these studies only")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    times, failed = {}, []
    for name in args.only or STUDIES:
        cmd = [
            sys.executable,
            os.path.join(HERE, f"{name}.py"),
            "--out",
            os.path.join(args.out, name),
            "--seed",
            str(args.seed),
        ] + (["--quick"] if args.quick else [])
        t = time.perf_counter()
        rc = subprocess.call(cmd)
        times[name] = round(time.perf_counter() - t, 1)
        print(f"== {name}: exit {rc}, {times[name]:.1f} s", flush=True)
        if rc:
            failed.append(name)
    with open(os.path.join(args.out, "times.json"), "w") as fh:
        json.dump(
            {
                "mode": "quick" if args.quick else "full",
                "wall_s": times,
                "total_s": round(sum(times.values()), 1),
            },
            fh,
            indent=2,
        )
    done = [
        os.path.join(args.out, n)
        for n in (args.only or STUDIES)
        if os.path.exists(os.path.join(args.out, n, "verdicts.json"))
    ]
    if done:
        for page in ("report.html", "report.md"):
            subprocess.call(
                [sys.executable, "-m", "ntkdyn.report", *done, "--out", os.path.join(args.out, page)]
            )
    print(f"total {sum(times.values()):.1f} s; failed: {failed or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
