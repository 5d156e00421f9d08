"""``blina synth``: write the synthetic four-center cohort (FHIR + OMOP) with its ground truth."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "generate the synthetic four-center cohort (FHIR bundles, Bulk NDJSON, OMOP CSV) with ground truth"
EXAMPLES = [
    "blina synth --out synth/",
    "blina synth --out big/ --seed 7 --patients 10000",
    "blina synth --out bench/ --noise 20   # 20 irrelevant records per relevant record",
]


def _non_negative(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"{v} is negative")
    return v


def _positive(text: str) -> int:
    v = _non_negative(text)
    if v == 0:
        raise argparse.ArgumentTypeError("need at least 1")
    return v


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (its generated sub-folders are replaced)")
    p.add_argument("--seed", type=int, default=42, help="random seed (default 42: the reference cohort)")
    p.add_argument("--patients", type=_positive, default=105, metavar="N",
                   help="number of patients (default 105 = the paper's cohort; other sizes keep the proportions)")
    p.add_argument("--noise", type=_non_negative, default=0, metavar="K",
                   help="irrelevant records added per relevant record of each patient (default 0)")


def run(args: argparse.Namespace) -> int:
    from blina_study.adapter.synth import generate

    m = generate(args.out, seed=args.seed, patients=args.patients, noise=args.noise)
    per_center = ", ".join(f"{k} {v['patients']}" for k, v in m["centers"].items())
    print(f"wrote {m['sizes']['patients']} patients / {m['sizes']['courses']} courses to {args.out} "
          f"({per_center}); truth in {Path(args.out) / 'truth'}, manifest {Path(args.out) / 'manifest.json'}")
    return 0
