"""Llama-architecture models and their tokenizer for demos, tests and benchmarks, built locally and deterministically.

The tokenizer is a byte-level BPE (vocab 512, specials `<pad>`=0, `<s>`=1, `</s>`=2; `<s>` prepended) trained with
`tokenizers` on the demo dataset's text, with a small chat template (`CHAT_TEMPLATE`: `role: content` lines, each
assistant turn closed by `</s>` and wrapped in `{% generation %}` so `return_assistant_tokens_mask` works too).
The model is `LlamaForCausalLM` from a fixed `LlamaConfig` with weights drawn after `torch.manual_seed(seed)`:

- `tiny` (hidden 64, 2 layers, 4 heads, 2 KV heads; ~0.1M parameters): tests and the demo;
- `small` (hidden 768, 12 layers, 12 heads, intermediate 2048; ~86M parameters, 343 MB in float32): a realistic
  size to measure training on, with the same tokenizer.

Both are written with `save_pretrained` (safetensors), so the Auto classes reload them offline. Same seed → same
bytes; nothing is downloaded.
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
SMALL_SIZES: dict[str, Any] = {
    "hidden_size": 768,
    "intermediate_size": 2048,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "num_key_value_heads": 12,
    "max_position_embeddings": 2048,
}
MODEL_SIZES: dict[str, dict[str, Any]] = {"tiny": {}, "small": SMALL_SIZES}

# `role: content` turns separated by newlines; an assistant turn ends with EOS so the model learns to stop.
# Newlines are expressions because Hugging Face renders templates with trim_blocks.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if not loop.first %}{{ '\\n' }}{% endif %}"
    "{{ message['role'] + ': ' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] + eos_token }}{% endgeneration %}"
    "{% else %}{{ message['content'] }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{% if messages %}{{ '\\n' }}{% endif %}{{ 'assistant: ' }}{% endif %}"
)


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
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def build_model(directory: str | os.PathLike[str], *, size: str = "tiny", seed: int = 0,
                overwrite: bool = False) -> Path:
    """Write the `tiny` or `small` model + tokenizer to `directory` (what `prov init-model --size` builds)."""
    if size not in MODEL_SIZES:
        raise UsageError(f"unknown model size {size!r} (one of {', '.join(MODEL_SIZES)})")
    return build_tiny_model(directory, seed=seed, overwrite=overwrite, sizes=MODEL_SIZES[size])


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
