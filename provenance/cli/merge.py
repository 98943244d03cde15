"""`prov merge CHECKPOINT_DIR --base-model DIR --out DIR`: the adapter merged into its base model (`prov.merge.v1`).

The output is a Hugging Face model directory (the base model's config and tokenizer files, the merged weights in
safetensors) whose tensor digest is the one a finished run commits at finalisation, so `prov verify OUT` finds it.
"""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command("merge")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--base-model", type=click.Path(path_type=Path), required=True, help="The run's base model directory.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="The merged model directory to write "
              "(must not exist or be empty).")
@click.option("--max-shard-size", type=click.IntRange(min=1), default=512, show_default=True,
              help="Largest weights file in MiB; a larger model is written in shards with an index (writing holds "
              "about three shards in memory).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def merge_command(checkpoint: Path, base_model: Path, out: Path, max_shard_size: int, as_json: bool) -> None:
    """Merge the LoRA adapter of CHECKPOINT (a checkpoint directory: adapter_model.safetensors and
    adapter_config.json) into the base model, deterministically (prov.merge.v1, the same bits on every machine).

    Plain LoRA only: DoRA, rsLoRA and other variants are refused with a one-line error (exit 2).
    """
    from provenance.merge import write_merged

    result = write_merged(base_model, checkpoint, out, max_shard_bytes=max_shard_size << 20)
    if as_json:
        click.echo(json.dumps({"files": list(result.files), "out": str(result.path),
                               "tensor_digest": str(result.tensor_digest),
                               "manifest_digest": str(result.manifest_digest)}, indent=2, sort_keys=True))
        return
    click.echo(f"merged {checkpoint} into {base_model}\n  out      {result.path} ({len(result.files)} weights "
               f"file{'s' if len(result.files) > 1 else ''})\n  tensors  {result.tensor_digest} (prov.merge.v1)\n"
               f"  files    {result.manifest_digest} (prov.merged-dir.v1, what the run's finalisation commits)\n"
               f"  verify   prov verify {result.path}")


COMMANDS = [merge_command]
