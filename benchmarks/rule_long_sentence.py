"""Time of the rule labeler on one long sentence (an export without periods) against its length.

usage: python benchmarks/rule_long_sentence.py [--kb 25 56 112 224] [--repeats 3] [--source DIR]

Each text is one sentence: a clause repeated up to the size, ``issue`` the clause of the report of
a quadratic labeler (27.5 s at 224 KB), ``mixed`` the one of tests/test_rule_labeler.py (every
construction whose cost could grow with the sentence). Per size: ``RuleLabeler().label_batch([text])``
without and with evidence, CPU seconds of this process (one thread, so the wall time on an idle
core), best of ``--repeats``, and microseconds per KB, flat where the cost is linear.
``--source`` is a checkout whose ``src/`` is imported instead of this one's (say, the code before a change).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

CLAUSES = {
    "issue": "there is no pneumothorax or pleural effusion and the heart size is normal with mild atelectasis at the left base ",
    "mixed": "the heart size is normal, possible left effusion, atelectasis versus pneumonia, pneumothorax not seen and no edema or consolidation ",
}

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--kb", type=int, nargs="+", default=[25, 56, 112, 224], help="sentence sizes in KB (1,024 characters)")
parser.add_argument("--repeats", type=int, default=3)
parser.add_argument("--clause", choices=sorted(CLAUSES), nargs="+", default=sorted(CLAUSES))
parser.add_argument("--source", type=Path, default=Path(__file__).resolve().parents[1], help="checkout whose src/ to import")
args = parser.parse_args()
sys.path.insert(0, str(args.source / "src"))
from cxrlabel.labelers.rule import RuleLabeler  # noqa: E402

labeler = RuleLabeler()


def best_cpu(text: str, evidence: bool) -> float:
    """The least CPU time of ``args.repeats`` runs of labeling ``text``."""
    times = []
    for _ in range(args.repeats):
        start = time.process_time()
        labeler.label_batch([text], evidence=evidence)
        times.append(time.process_time() - start)
    return min(times)


print(f"source: {args.source}, best of {args.repeats}")
print("| clause | KB | labels s | labels + evidence s | µs per KB (labels) |\n| --- | ---: | ---: | ---: | ---: |")
for name in args.clause:
    for kb in args.kb:
        text = (CLAUSES[name] * (kb * 1024 // len(CLAUSES[name]) + 1))[: kb * 1024]
        labels, evidence = best_cpu(text, False), best_cpu(text, True)
        print(f"| {name} | {kb} | {labels:.2f} | {evidence:.2f} | {labels / kb * 1e6:,.0f} |", flush=True)
