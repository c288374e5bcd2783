"""One 2-thread training job against two 1-thread jobs side by side, on this machine's cores: why
the embedded default gives every job one thread (config/config.yaml, resources).

usage: python benchmarks/thread_layout.py RESULTS [--steps 60]
RESULTS: a finished embedded-default run (its models/base and instruct/ tables). Each job is a
real TRL SFT run of ``--steps`` steps of the embedded default's settings; the work per second is
steps done / wall seconds, whole process (start-up included), each layout run alone.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

JOB = """
import sys
from cxrlabel.training.sft import run_sft
results, threads, out, steps = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
settings = {"max_steps": steps, "per_device_train_batch_size": 8, "learning_rate": 3e-4, "bf16": False, "gradient_checkpointing": False,
            "max_length": 1536, "train_sampling_strategy": "group_by_length", "logging_steps": 10**6, "save_steps": 10**6, "seed": 0,
            "use_cpu": True, "disable_tqdm": True}
run_sft(f"{results}/models/base", f"{results}/instruct/instruct_train.parquet", f"{results}/instruct/instruct_validate.parquet", out, settings, threads)
"""

parser = argparse.ArgumentParser()
parser.add_argument("results")
parser.add_argument("--steps", type=int, default=60)
parser.add_argument("--out", default="/tmp/cxrlabel-thread-layout")
args = parser.parse_args()


def jobs(threads: int, count: int) -> float:
    """Wall seconds of ``count`` jobs of ``threads`` threads started together."""
    start = time.perf_counter()
    running = [subprocess.Popen([sys.executable, "-c", JOB, args.results, str(threads), f"{args.out}/{threads}-{count}-{i}", str(args.steps)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i in range(count)]
    if any(process.wait() for process in running):
        raise SystemExit("a job failed")
    return time.perf_counter() - start


print("| layout | jobs | wall s | steps per s |\n| --- | ---: | ---: | ---: |")
for threads, count in ((2, 1), (1, 1), (1, 2)):
    wall = jobs(threads, count)
    print(f"| {count} x {threads} thread{'s' if threads > 1 else ''} | {count} | {wall:.1f} | {count * args.steps / wall:.2f} |")
