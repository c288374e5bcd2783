"""Candidate outputs sampled from a policy for many prompts, in one job of N processes.

The preferences and review_set rules sample candidates (and, for sentence units, the greedy
output) for every unit of their reports. In a job of N processes each process samples a
contiguous share of the units on its own GPU; the shares are joined in input order. A candidate's
draw depends only on the seed, its prompt and its number (:meth:`LLMLabeler.sample`), so the
candidates are those of one process.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cxrlabel.distributed import launch, rank, world_size
from cxrlabel.instruct import PromptSettings


def sample_share(policy_dir: str, units_path: str, out: str, n: int, temperature: float, seed: int, batch_size: int, max_new_tokens: int | None,
                 threads: int, greedy: bool) -> None:
    """One process's work: sample ``n`` candidates (and the greedy output when ``greedy``) for its
    share of the units listed in ``units_path`` (JSON), written as JSON to ``out`` (``out.part<rank>``
    in a job of several processes)."""
    from cxrlabel.labelers.llm import LLMLabeler

    units = json.loads(Path(units_path).read_text())
    share = -(-len(units) // world_size())
    mine = units[rank() * share : (rank() + 1) * share]
    policy = LLMLabeler(policy_dir, batch_size=batch_size, max_new_tokens=max_new_tokens, threads=max(1, threads // world_size()))
    prompts = [policy.prompt_ids(unit)[0] for unit in mine]
    result = {"candidates": policy.sample(prompts, n, temperature, seed), "greedy": policy.generate(prompts) if greedy else []}
    Path(out if world_size() == 1 else f"{out}.part{rank()}").write_text(json.dumps(result))


@dataclass(frozen=True)
class CandidateSampler:
    """Samples a policy's candidates for many units in a job of ``processes`` processes
    (:func:`cxrlabel.distributed.launch`; their output goes to ``log_path``), ``threads`` CPU
    threads in all."""

    policy_dir: str
    batch_size: int
    max_new_tokens: int | None = None  # None: the policy's own (stored with it)
    threads: int = 1
    processes: int = 1
    log_path: str | None = None

    @property
    def prompt(self) -> PromptSettings:
        """How the policy is prompted (its unit and completion format)."""
        from cxrlabel.labelers.llm import read_llm_settings

        return read_llm_settings(self.policy_dir)

    def sample(self, units: list[str], n: int, temperature: float, seed: int, greedy: bool = False) -> tuple[list[list[str]], list[str]]:
        """Per unit of ``units`` (the texts the policy is prompted with), ``n`` sampled candidates,
        and the greedy output when ``greedy`` (else an empty list)."""
        if self.processes > 1 and self.log_path is None:
            raise ValueError("a sampling job of several processes needs a log_path for their output")
        with tempfile.TemporaryDirectory(prefix="cxrlabel-sample-") as scratch:
            units_path, out = Path(scratch) / "units.json", Path(scratch) / "samples.json"
            units_path.write_text(json.dumps(units))
            job = {"policy_dir": self.policy_dir, "units_path": str(units_path), "out": str(out), "n": n, "temperature": temperature, "seed": seed,
                   "batch_size": self.batch_size, "max_new_tokens": self.max_new_tokens, "threads": self.threads, "greedy": greedy}
            launch("cxrlabel.sampling:sample_share", job, self.processes, self.log_path or "")
            parts = [out] if self.processes <= 1 else [Path(f"{out}.part{r}") for r in range(self.processes)]
            results = [json.loads(part.read_text()) for part in parts]
        return [c for r in results for c in r["candidates"]], [g for r in results for g in r["greedy"]]
