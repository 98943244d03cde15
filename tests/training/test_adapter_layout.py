"""The adapter layouts (`prov.adapter.v1`, `prov.adapter.v2`, docs/formats.md): adapter_config.json bytes pinned by
golden files, since a replay on an auditor's machine must rebuild them exactly (a PEFT upgrade that changes
`LoraConfig.to_dict()` changes them too, and must be caught here). `python -m tests.training.test_adapter_layout`
rewrites the golden files (deliberately: a changed golden file is a changed format, which needs a new name)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

pytest.importorskip("peft", reason="the adapter config is PEFT's (the train extra)")

from provenance.errors import FormatError
from provenance.manifest import ADAPTER_FORMAT, ADAPTER_FORMAT_V1
from training.checkpoint import AdapterLayout, adapter_config, adapter_layout

GOLDEN = Path(__file__).parents[1] / "provenance" / "golden"
BASE_DIGEST = "sha256:" + "ab" * 32
# The trainer's LoRA settings for the tiny model (training.model.add_lora).
LORA = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.05, "target_modules": ["q_proj", "v_proj"], "bias": "none"}


def _engine() -> Any:
    from peft import LoraConfig

    return SimpleNamespace(peft_model=SimpleNamespace(peft_config={"default": LoraConfig(**LORA)}))


def cases() -> dict[str, bytes]:
    engine = _engine()
    return {
        "adapter-config.v1.json": adapter_config(engine, base_model_digest=BASE_DIGEST),
        "adapter-config.v2.json": adapter_config(engine, base_model_digest=BASE_DIGEST,
                                                 layout=AdapterLayout(ADAPTER_FORMAT, "model")),
    }


@pytest.mark.parametrize("name", sorted(cases()))
def test_adapter_config_bytes_are_pinned(name: str) -> None:
    assert cases()[name] == (GOLDEN / name).read_bytes(), f"{name} changed: a new adapter format is needed"


def test_the_layout_comes_from_the_run_manifest() -> None:
    assert adapter_layout({"formats": {}}) == AdapterLayout()  # runs before prov.adapter.v2
    assert adapter_layout({"formats": {"adapter": ADAPTER_FORMAT_V1}, "base_model": {"name": "m"}}) == AdapterLayout()
    assert adapter_layout({"formats": {"adapter": ADAPTER_FORMAT}, "base_model": {"name": "m"}}) == \
        AdapterLayout(ADAPTER_FORMAT, "m")
    with pytest.raises(FormatError, match="unknown adapter format"):
        adapter_layout({"formats": {"adapter": "prov.adapter.v9"}})
    with pytest.raises(FormatError, match=r"needs base_model\.name"):
        adapter_layout({"formats": {"adapter": ADAPTER_FORMAT}, "base_model": {"name": ""}})


if __name__ == "__main__":
    for file_name, data in cases().items():
        (GOLDEN / file_name).write_bytes(data)
        print(f"wrote {GOLDEN / file_name}")
