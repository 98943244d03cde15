"""A tiny Llama-architecture model and tokenizer for demos and tests, built locally and deterministically.

The tokenizer is a byte-level BPE (vocab 512, specials `<pad>`=0, `<s>`=1, `</s>`=2; `<s>` prepended) trained with
`tokenizers` on the demo dataset's text. The model is `LlamaForCausalLM` from a fixed `LlamaConfig` (hidden 64,
2 layers, 4 heads, 2 KV heads) with weights drawn after `torch.manual_seed(seed)`. Both are written with
`save_pretrained` (safetensors), so the Auto classes reload them offline. Same seed → same bytes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from provenance.dataset import load_examples
from provenance.errors import UsageError
from training.data import DEMO_DATA

TINY_DEFAULTS: dict[str, Any] = {
    "vocab_size": 512,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
}


def train_tokenizer(texts: Sequence[str], *, vocab_size: int = 512) -> object:
    """A byte-level BPE tokenizer trained on `texts`, wrapped for `save_pretrained`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def build_tiny_model(directory: str | os.PathLike[str], *, seed: int = 0, texts: Sequence[str] | None = None,
                     overwrite: bool = False, sizes: dict[str, int] | None = None) -> Path:
    """Write a tiny model + tokenizer to `directory` and return it. `sizes` overrides `TINY_DEFAULTS` entries
    (e.g. a wider, deeper model for benchmarks)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from training.model import quiet_libraries

    target = Path(directory)
    if target.exists() and any(target.iterdir()) and not overwrite:
        raise UsageError(f"{target}: directory exists and is not empty (choose another or remove it)")
    target.mkdir(parents=True, exist_ok=True)
    quiet_libraries()
    corpus = list(texts) if texts is not None else load_examples(DEMO_DATA)
    dims = {**TINY_DEFAULTS, **(sizes or {})}
    unknown = set(dims) - set(TINY_DEFAULTS)
    if unknown:
        raise UsageError(f"unknown tiny-model size field(s): {', '.join(sorted(unknown))}")
    tokenizer = train_tokenizer(corpus, vocab_size=dims["vocab_size"])
    config = LlamaConfig(
        **dims,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)  # type: ignore[attr-defined]
    return target
