"""One job, N processes: what a rule that asks for N > 1 GPUs runs.

Trainers run under torchrun (``python -m torch.distributed.run``, which ships with the pinned
torch: nothing more to pin or configure, and the HF Trainer reads the LOCAL_RANK / WORLD_SIZE it
sets), one process per GPU, data-parallel: DDP over NCCL on GPUs, gloo on CPU. Batch inference is
sharded instead: each process labels a contiguous part of the reports on its own GPU, and the
parts are joined in input order, so predictions are those of one process.

One node per job (``--standalone``): a job spread over several nodes is out of scope.
Per process: ``threads // N`` CPU threads, and the configured global batch kept
(:func:`per_process_batch`).
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("cxrlabel.distributed")  # also when run as __main__


def rank() -> int:
    """This process's rank in its job (0 when not launched by torchrun)."""
    return int(os.environ.get("RANK", 0))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", 1))


def per_process_batch(settings: dict[str, Any], processes: int) -> dict[str, Any]:
    """Trainer ``settings`` for one of ``processes`` data-parallel processes, with the global batch
    (per-device batch x processes x gradient accumulation) equal to the configured one-process
    batch (``per_device_train_batch_size`` x ``gradient_accumulation_steps``).

    The per-process share (global / processes) keeps as much of the configured per-device batch
    as divides it (their gcd) and accumulates the rest: batch 2, accumulation 2 (global 4) on 4
    processes is batch 1, accumulation 1; batch 16 on 2 processes is batch 8.
    """
    if processes == 1:
        return settings
    device_batch, accumulation = settings.get("per_device_train_batch_size", 8), settings.get("gradient_accumulation_steps", 1)
    global_batch = device_batch * accumulation
    if global_batch % processes:
        raise ValueError(
            f"a global batch of {global_batch} (per_device_train_batch_size {device_batch} x gradient_accumulation_steps {accumulation}) "
            f"cannot be split over {processes} processes: make it a multiple of {processes}, or ask for fewer GPUs"
        )
    share = global_batch // processes
    device_batch = math.gcd(device_batch, share)
    return settings | {"per_device_train_batch_size": device_batch, "gradient_accumulation_steps": share // device_batch}


def launch(target: str, kwargs: dict[str, Any], processes: int, log_path: str | Path) -> Any:
    """Call ``target`` ("module:function") with ``kwargs``: here when ``processes`` is 1, else in
    ``processes`` processes under torchrun, whose output is appended to ``log_path``."""
    if processes <= 1:
        return _function(target)(**kwargs)
    with tempfile.TemporaryDirectory(prefix="cxrlabel-launch-") as scratch:
        spec = Path(scratch) / "launch.json"
        spec.write_text(json.dumps({"target": target, "kwargs": kwargs}))
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}", "-m", "cxrlabel.distributed", str(spec)]
        log.info("launching %s in %d processes: %s", target, processes, " ".join(command))
        for handler in logging.getLogger().handlers:
            handler.flush()
        with open(log_path, "a") as out:
            done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{target} failed in one of its {processes} processes (exit status {done.returncode}): see {log_path}")
    return None


def _function(target: str) -> Callable[..., Any]:
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def main(spec_path: str) -> None:
    """The entry point of each launched process."""
    spec = json.loads(Path(spec_path).read_text())
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s rank {rank()}/{world_size()} %(levelname)s %(name)s: %(message)s", stream=sys.stdout, force=True)
    log.info("process %d of %d (local rank %s) runs %s", rank(), world_size(), os.environ.get("LOCAL_RANK"), spec["target"])
    import torch

    if torch.cuda.is_available():  # "cuda" is then this process's own GPU
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    _function(spec["target"])(**spec["kwargs"])


if __name__ == "__main__":
    main(sys.argv[1])
