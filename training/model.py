"""Loading a local causal LM + tokenizer (safetensors only, offline) and adding a PEFT LoRA adapter.

The base model is loaded in float32 with eager attention (the determinism settings recorded in the run manifest).
LoRA initialisation draws from the global torch RNG, seeded with `training.seed` right before the adapter is
added, so checkpoint 0 is a function of the base model and the config alone.

`adapter_config.json` written into checkpoints is PEFT's config with `base_model_name_or_path` replaced by the
base-model digest (PEFT would embed this machine's absolute path), serialised with sorted keys and no whitespace.
"""

from __future__ import annotations

import json
import os
import warnings
from typing import Any

import torch

from provenance.basemodel import check_model_dir
from provenance.errors import UsageError, one_line
from training.config import LoraSettings


def quiet_libraries() -> None:
    """Silence progress bars and known-harmless warnings of transformers/opacus (they would garble ours)."""
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
    warnings.filterwarnings("ignore", message=".*Full backward hook is firing.*")
    warnings.filterwarnings("ignore", message=".*Using a non-full backward hook.*")
    warnings.filterwarnings("ignore", message=".*Secure RNG turned off.*")
    warnings.filterwarnings("ignore", message=".*Optimal order is the largest alpha.*")


def load_base_model(directory: str | os.PathLike[str], *, dtype: str = "float32",
                    attn_implementation: str = "eager") -> tuple[Any, Any]:
    """Load (model, tokenizer) from a local directory; never from a hub and never from pickle files."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = check_model_dir(directory)
    quiet_libraries()
    try:
        tokenizer = AutoTokenizer.from_pretrained(root, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(
            root,
            local_files_only=True,
            use_safetensors=True,
            dtype=getattr(torch, dtype),
            attn_implementation=attn_implementation,
        )
    except (OSError, ValueError, KeyError) as exc:
        raise UsageError(f"{root}: cannot load as a causal LM: {one_line(exc, 300)}") from None
    model.eval()  # dropout in the base model off; LoRA dropout is switched on by the engine
    return model, tokenizer


def add_lora(model: Any, settings: LoraSettings, *, seed: int) -> Any:
    """Wrap `model` with a LoRA adapter; LoRA's random init is seeded with `seed`."""
    from peft import LoraConfig, get_peft_model

    module_names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [m for m in settings.target_modules if m not in module_names]
    if missing:
        raise UsageError(f"lora.target_modules: the model has no module named {', '.join(missing)}")
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        bias="none",
    )
    torch.manual_seed(seed)
    peft_model = get_peft_model(model, config)
    return peft_model


def trainable_parameters(peft_model: Any) -> list[tuple[str, torch.nn.Parameter]]:
    """The LoRA parameters in module order, named as in the adapter file (no `.default` adapter suffix)."""
    out = []
    for name, param in peft_model.named_parameters():
        if param.requires_grad:
            out.append((name.replace(".default.", "."), param))
    if not out:
        raise UsageError("the LoRA adapter has no trainable parameters")
    return out


def adapter_state(peft_model: Any) -> dict[str, torch.Tensor]:
    """The adapter's tensors as PEFT saves them (contiguous CPU copies)."""
    from peft import get_peft_model_state_dict

    state = get_peft_model_state_dict(peft_model)
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def load_adapter_state(peft_model: Any, tensors: dict[str, torch.Tensor]) -> None:
    """Copy adapter tensors (read from a checkpoint's safetensors) into the model, exactly."""
    expected = {name for name, _ in trainable_parameters(peft_model)}
    if set(tensors) != expected:
        raise UsageError(
            f"adapter tensors do not match the model's LoRA parameters "
            f"(missing {sorted(expected - set(tensors))[:3]}, unexpected {sorted(set(tensors) - expected)[:3]})"
        )
    for name, param in trainable_parameters(peft_model):
        value = tensors[name]
        if value.shape != param.shape or value.dtype != param.dtype:
            raise UsageError(f"adapter tensor {name}: {value.dtype} {tuple(value.shape)} where the model's LoRA "
                             f"parameter is {param.dtype} {tuple(param.shape)}")
    with torch.no_grad():
        for name, param in trainable_parameters(peft_model):
            param.copy_(tensors[name])


def adapter_config_bytes(peft_model: Any, *, base_model_digest: str) -> bytes:
    """PEFT's adapter config with a stable base-model reference (see the module docstring)."""
    config = peft_model.peft_config["default"].to_dict()
    config["base_model_name_or_path"] = base_model_digest
    return json.dumps(_plain(config), sort_keys=True, separators=(",", ":")).encode("utf-8")


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, set | frozenset):
        return sorted(_plain(v) for v in value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "value") and not isinstance(value, str | int | float | bool):  # enums
        return value.value
    return value
