"""Whole-process speed of `cxrlabel label`: the rule labeler against its own speed, and the LLM labeler.

usage: python benchmarks/cli_label.py [--openi CSV] [--copies 7] [--source NAME=DIR ...] [--jsonl] [--llm MODEL_DIR --llm-reports 1000]

Writes a CSV of the OpenI dev reports repeated ``--copies`` times (uid, findings, impression:
15,456 reports by default), and the same reports with a line break after every sentence (quoted
fields over several lines, as hospital exports have them: "multi-line"), and runs the command a user runs, `python -m cxrlabel.cli label`, on
it as a new process (start-up included), pinned to one core and to two, best of 3. Each
``--source`` is a checkout whose ``src/`` is put first on the path, so that two versions run side
by side in one run (default: this checkout). Then the labeler alone, in this process on one core:
`RuleLabeler.label_batch` over the same texts, best of 3. With ``--jsonl``, the rule labeler's
command with ``--format jsonl`` (labels and evidence) too, from the last source. With ``--llm``, the same command with
`--labeler llm --model MODEL_DIR` on the CSV's first ``--llm-reports`` reports, likewise.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

ROOT = Path(__file__).resolve().parents[1]
parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--openi", default=str(ROOT.parent / "shared/data/openi/openi_dev.csv"))
parser.add_argument("--copies", type=int, default=7)
parser.add_argument("--source", action="append", help="NAME=DIR: a checkout to run (default: this one)")
parser.add_argument("--repeats", type=int, default=3)
parser.add_argument("--jsonl", action="store_true", help="time `--format jsonl` (evidence) too, from the last source")
parser.add_argument("--llm", help="an LLM labeler's model folder: time `--labeler llm` too")
parser.add_argument("--llm-reports", type=int, default=1000)
args = parser.parse_args()

reports = pacsv.read_csv(args.openi, convert_options=pacsv.ConvertOptions(include_columns=["uid", "findings", "impression"]))
reports = pa.concat_tables([reports] * args.copies)
work = Path(tempfile.mkdtemp(prefix="cli-label-"))
runs = [("rule", [], work / "reports.csv", reports.num_rows), ("rule multi-line", [], work / "reports_multiline.csv", reports.num_rows)]
pacsv.write_csv(reports, runs[0][2])
broken = {name: pc.replace_substring(reports[name], ". ", ".\n") for name in ("findings", "impression")}
pacsv.write_csv(reports.set_column(1, "findings", broken["findings"]).set_column(2, "impression", broken["impression"]), runs[1][2])
if args.llm:
    runs.append(("llm", ["--model", args.llm], work / "llm_reports.csv", min(args.llm_reports, reports.num_rows)))
    pacsv.write_csv(reports.slice(0, runs[1][3]), runs[1][2])
print(f"{reports.num_rows} reports in {runs[0][2]}")


def best_wall(command: list[str], env: dict[str, str]) -> float | str:
    """The best wall time of ``args.repeats`` runs, or the command's last error line where it fails."""
    walls = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode:
            return "fails: " + done.stderr.strip().splitlines()[-1][:160]
        walls.append(time.perf_counter() - start)
    return min(walls)


sources = [entry.split("=", 1) for entry in args.source or [f"this={ROOT}"]]
if args.jsonl:
    runs.insert(1, ("rule", ["--format", "jsonl"], runs[0][2], runs[0][3]))
print("| labeler | source | cores | reports | wall s | reports/s |\n| --- | --- | ---: | ---: | ---: | ---: |")
for kind, options, csv, count in runs:
    if options[:1] == ["--format"]:
        kind_sources = sources[-1:]
        kind = f"{kind} {options[-1]}"
    else:
        kind_sources = sources
    finished = set()
    for name, directory in kind_sources:
        for cores in ("0", "0,1"):
            threads = str(len(cores.split(",")))
            env = os.environ | {"PYTHONPATH": str(Path(directory) / "src"), "OMP_NUM_THREADS": threads, "POLARS_MAX_THREADS": threads}
            command = ["taskset", "-c", cores, sys.executable, "-m", "cxrlabel.cli", "label", "--labeler", kind.split()[0], *options,
                       "--input", str(csv), "--output", str(work / f"{kind.replace(' ', '_')}-{name}.csv")]
            wall = best_wall(command, env)
            timing = f"{wall} | |" if isinstance(wall, str) else f"{wall:.2f} | {count / wall:,.1f} |"
            finished |= set() if isinstance(wall, str) else {name}
            print(f"| {kind} | {name} | {threads} | {count} | {timing}", flush=True)
    outputs = {name: (work / f"{kind.replace(' ', '_')}-{name}.csv").read_bytes() for name in finished}
    print(f"{kind}: outputs identical across the {len(outputs)} sources that finished: {len(set(outputs.values())) == 1}")

os.sched_setaffinity(0, {0})
sys.path.insert(0, str(Path(sources[0][1]) / "src"))
from cxrlabel.labelers.rule import RuleLabeler  # noqa: E402  (from the first source)

texts = [f"{f or ''} {i or ''}" for f, i in zip(reports["findings"].to_pylist(), reports["impression"].to_pylist())]
labeler = RuleLabeler()
walls = []
for _ in range(args.repeats):
    start = time.perf_counter()
    labeler.label_batch(texts)
    walls.append(time.perf_counter() - start)
print(f"labeler alone ({sources[0][0]}), 1 core: {min(walls):.2f} s, {len(texts) / min(walls):,.0f} reports/s")
