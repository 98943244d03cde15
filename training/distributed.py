"""Data-parallel training under `torchrun` (torch.distributed: gloo on CPU, NCCL on GPU): one rank's process.

`python -m training.distributed RUN_DIR [--fresh] [--quiet] [--progress FILE] [--result FILE] [--anchor JSON]` is
what `training.launch.launch_torchrun` starts on every rank through `torch.distributed.run`. Each rank computes
its shard of every step's logical batch (`training.engine`); `TorchCollective.all_gather` gathers the per-rank
flat clipped sums (and the per-sample statistics) so that every rank adds them in rank order and applies the same
update; every rank derives the same noise from the secret key (no broadcast; added once). Rank 0 owns the step
log, the stats file, the checkpoints and the outbox, and writes the run's result (or its one-line error) to
`--result` as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from provenance.errors import ProvenanceError, UsageError, one_line
from training.config import AnchorConfig, _build
from training.runinfo import read_manifest

RESULT_FORMAT = "prov.train-result.v1"


@dataclass(frozen=True)
class TorchCollective:
    """This process is rank `rank` of `world_size`; tensors are gathered with `torch.distributed.all_gather`."""

    world_size: int
    rank: int
    device: str = "cpu"
    local_ranks: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "local_ranks", (self.rank,))

    def all_gather(self, local: Mapping[int, torch.Tensor]) -> list[torch.Tensor]:
        mine = local[self.rank].contiguous()
        out = [torch.empty_like(mine) for _ in range(self.world_size)]
        dist.all_gather(out, mine)
        return out


def _write_result(path: Path | None, document: dict[str, Any]) -> None:
    if path is None:
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"format": RESULT_FORMAT, **document}, sort_keys=True))
    os.replace(tmp, path)


def main(argv: Sequence[str] | None = None) -> int:
    from training.trainer import run_rank

    parser = argparse.ArgumentParser(prog="python -m training.distributed")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--fresh", action="store_true", help="the run was just prepared (no resume checks)")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--progress", type=Path, help="rank 0 writes its progress lines here")
    parser.add_argument("--result", type=Path, help="rank 0 writes the result (or error) here as JSON")
    parser.add_argument("--anchor", help="anchoring settings overriding the run's (JSON)")
    args = parser.parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    result_path = args.result if rank == 0 else None
    stream = None
    try:
        manifest = read_manifest(args.run_dir)
        if int(manifest["training"].get("world_size", 1)) != world:
            raise UsageError(f"{args.run_dir}: the run has world size {manifest['training'].get('world_size', 1)}; "
                             f"torchrun started {world} processes")
        device = str(manifest["determinism"].get("device", "cpu"))
        if device == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if device == "cuda" else "gloo", rank=rank, world_size=world)
        anchor = _build(AnchorConfig, json.loads(args.anchor), "anchor") if args.anchor else None
        if rank == 0 and args.progress is not None:
            stream = open(args.progress, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 (closed below)
        collective = TorchCollective(world, rank, device)
        result = run_rank(args.run_dir, collective, fresh=args.fresh, quiet=args.quiet or rank != 0, anchor=anchor,
                          stream=stream)
        if result is not None:
            _write_result(result_path, {"result": result.to_json()})
        return 0
    except ProvenanceError as exc:
        _write_result(result_path, {"error": str(exc), "exit_code": exc.exit_code})
        print(f"prov: error: rank {rank}: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # a bug or a library's failure: its traceback goes to launch.log, one line to the user
        traceback.print_exc()
        message = (f"rank {rank} failed: {type(exc).__name__}: {one_line(exc, 300)} (traceback in "
                   f"{args.run_dir / 'launch.log'}; continue with `prov train --resume {args.run_dir}`)")
        _write_result(result_path, {"error": message, "exit_code": 1})
        print(f"prov: error: {message}", file=sys.stderr)
        return 1
    finally:
        if stream is not None:
            stream.close()
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
