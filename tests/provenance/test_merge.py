"""The deterministic merge (`prov.merge.v1`, provenance.merge): a hand-computed example, round-to-nearest-even
against a naive exact reference, the same digest in a fresh torch-free process, refused adapters, and merged models
that transformers loads with the logits of PEFT's own merge."""

from __future__ import annotations

import bisect
import json
import subprocess
import sys
import textwrap
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from provenance.errors import FormatError, UsageError
from provenance.merge import (
    AdapterError,
    merged_tensor_digest,
    open_merge,
    read_adapter_config,
    round_to_dtype,
    to_float64,
    write_merged,
)
from provenance.safetensors import (
    read_header,
    read_tensors,
    tensor_digest,
    tensor_digest_of_bytes,
    tensor_digest_of_files,
)
from tests.fixtures.merge import encode, peft_config, write_adapter, write_base

REPO = Path(__file__).resolve().parents[2]
W = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float32)
A = np.array([[1, 0, 1], [0, 1, 0]], dtype=np.float32)  # r = 2, in = 3
B = np.array([[1, 2], [0, 1]], dtype=np.float32)  # out = 2
OTHER = np.arange(4, dtype=np.float32)


@pytest.fixture
def hand(tmp_path: Path) -> tuple[Path, Path]:
    """Base {layer.q.weight: W, norm.weight}, adapter on layer.q with r = 2, alpha = 4 (scale 2)."""
    base = write_base(tmp_path / "base", {"layer.q.weight": W, "norm.weight": OTHER})
    adapter = write_adapter(tmp_path / "adapter", {"layer.q.weight": (A, B)}, config=peft_config(r=2, lora_alpha=4))
    return base, adapter


def test_hand_computed_merge(hand: tuple[Path, Path], tmp_path: Path) -> None:
    # B @ A = [[1, 2, 1], [0, 1, 0]]; W + 2 · (B @ A) = [[3, 6, 5], [4, 7, 6]]; norm.weight is copied unchanged.
    base, adapter = hand
    out = write_merged(base, adapter, tmp_path / "merged")
    tensors = read_tensors((out.path / "model.safetensors").read_bytes())
    assert tensors["layer.q.weight"].tolist() == [[3, 6, 5], [4, 7, 6]]
    assert tensors["layer.q.weight"].dtype == np.float32
    assert tensors["norm.weight"].tolist() == OTHER.tolist()
    expected = {"layer.q.weight": np.array([[3, 6, 5], [4, 7, 6]], dtype=np.float32), "norm.weight": OTHER}
    # The merged digest is the tensor digest of exactly those tensors, however they are written.
    known = tensor_digest_of_bytes(encode(expected))
    assert out.tensor_digest == known == tensor_digest(out.path / "model.safetensors")
    assert merged_tensor_digest(base, adapter / "adapter_model.safetensors", adapter / "adapter_config.json") == known
    # Pinned: hashlib.sha256(records.encode_safetensors(<expected as F32 entries>, {"format": "prov.tensors.v1"}))
    assert str(known) == "sha256:d8ba2f817a85988fbd40af0fabb5b942e42ddb61225fb8a50b7477c19633f120"
    assert read_header(out.path / "model.safetensors").metadata == {"format": "pt", "prov.merge": "prov.merge.v1"}
    assert sorted(p.name for p in out.path.iterdir()) == ["config.json", "model.safetensors", "prov-merged.json",
                                                          "tokenizer.json"]


def test_accumulation_is_float64_in_rank_order_then_rounded_once(tmp_path: Path) -> None:
    # W = 1, rank terms 2^-25 and 2^-24 (scale 1): float64 gives 1 + 3·2^-25, which rounds once to 1 + 2^-23 in
    # float32 (0.75 of an ulp). Adding the terms to W one at a time in float32 would give 1 (each step rounds back).
    base = write_base(tmp_path / "b", {"w.weight": np.ones((1, 1), dtype=np.float32)})
    a = np.array([[2.0**-25], [2.0**-24]], dtype=np.float32)  # r = 2, in = 1
    b = np.ones((1, 2), dtype=np.float32)
    adapter = write_adapter(tmp_path / "a", {"w.weight": (a, b)}, config=peft_config(r=2, lora_alpha=2))
    with open_merge(base, adapter / "adapter_model.safetensors", adapter / "adapter_config.json") as merge:
        value = np.frombuffer(b"".join(merge.chunks("w.weight")), dtype="<f4")[0]
    assert value == np.float32(1 + 2.0**-23)
    assert (np.float32(1) + np.float32(2.0**-25)) + np.float32(2.0**-24) == np.float32(1)


def test_bf16_base_weights_round_to_nearest_even(tmp_path: Path) -> None:
    # bf16 has 8 significant bits: its ulp is 2^-7 on [1, 2). 1 + 2^-8 is the midpoint of 1 and 1 + 2^-7: ties to
    # the even pattern, 1. -2 + 3·2^-9 = -1.994140625 is nearer -1.9921875 (= -(2 - 2^-7)) than -2.
    raw = round_to_dtype(np.array([[1.0, -2.0]]), "BF16")
    base = write_base(tmp_path / "b", {"w.weight": ("BF16", (1, 2), raw)})
    a = np.array([[2.0**-8, 3 * 2.0**-9]], dtype=np.float32)  # r = 1, in = 2
    adapter = write_adapter(tmp_path / "a", {"w.weight": (a, np.ones((1, 1), dtype=np.float32))},
                            config=peft_config(r=1, lora_alpha=1))
    with open_merge(base, adapter / "adapter_model.safetensors", adapter / "adapter_config.json") as merge:
        assert merge.tensors[0].dtype == "BF16"
        merged = to_float64(b"".join(merge.chunks("w.weight")), "BF16")
    assert merged.tolist() == [1.0, -1.9921875]


def test_the_digest_streams_one_block_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """32 MiB of base weights, two of them targets: with 64 KiB blocks, Python allocations stay a small fraction of
    the model (the whole model is never held; tracemalloc counts numpy's buffers)."""
    import tracemalloc

    import provenance.merge as merge_module

    rng = np.random.default_rng(3)
    tensors = {f"l{i}.weight": rng.standard_normal((1024, 2048)).astype(np.float32) for i in range(4)}
    base = write_base(tmp_path / "base", tensors)
    adapter = write_adapter(tmp_path / "a", {n: (rng.standard_normal((4, 2048)).astype(np.float32),
                                                 rng.standard_normal((1024, 4)).astype(np.float32))
                                             for n in ("l0.weight", "l2.weight")}, config=peft_config(r=4))
    expected = merged_tensor_digest(base, adapter / "adapter_model.safetensors", adapter / "adapter_config.json")
    monkeypatch.setattr(merge_module, "BLOCK_ELEMENTS", 1 << 13)
    monkeypatch.setattr(merge_module, "READ_BLOCK", 1 << 16)
    del tensors
    tracemalloc.start()
    try:
        found = merged_tensor_digest(base, adapter / "adapter_model.safetensors", adapter / "adapter_config.json")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert found == expected  # block size changes nothing: every element is computed alone
    assert peak < 4 * 2**20, peak  # the model is 32 MiB


# --- round to nearest even, against a naive exact reference ------------------------------------------------------

def _format_values(exp_bits: int, mant_bits: int) -> tuple[list[Fraction], list[int]]:
    """Every finite non-negative value of a binary format, ascending, with its bits; then +inf as 2^(emax+1)."""
    bias = (1 << (exp_bits - 1)) - 1
    values, bits = [], []
    for pattern in range(((1 << exp_bits) - 1) << mant_bits):  # below the all-ones exponent (inf/NaN)
        exponent, mantissa = pattern >> mant_bits, pattern & ((1 << mant_bits) - 1)
        if exponent == 0:
            values.append(Fraction(mantissa, 1 << mant_bits) * Fraction(2) ** (1 - bias))
        else:
            values.append((1 + Fraction(mantissa, 1 << mant_bits)) * Fraction(2) ** (exponent - bias))
        bits.append(pattern)
    values.append(Fraction(2) ** (bias + 1))  # where rounding overflows to +inf
    bits.append(((1 << exp_bits) - 1) << mant_bits)
    return values, bits


FORMATS = {"BF16": (8, 7), "F16": (5, 10)}
TABLES = {name: _format_values(*shape) for name, shape in FORMATS.items()}


def reference_bits(x: float, dtype: str) -> int:
    """The format's bits for x by the definition: nearest value, ties to the even bit pattern."""
    exp_bits, mant_bits = FORMATS[dtype]
    sign = (1 << (exp_bits + mant_bits)) if np.signbit(x) else 0
    if np.isinf(x):
        return sign | (((1 << exp_bits) - 1) << mant_bits)
    values, bits = TABLES[dtype]
    a = abs(Fraction(x))
    i = bisect.bisect_right(values, a) - 1
    if i == len(values) - 1:
        return sign | bits[-1]
    low, high = values[i], values[i + 1]
    if a - low < high - a or (a - low == high - a and bits[i] % 2 == 0):
        return sign | bits[i]
    return sign | bits[i + 1]


def _samples(dtype: str, rng: np.random.Generator) -> np.ndarray:
    values, _ = TABLES[dtype]
    picks = rng.integers(0, len(values) - 1, 400)
    midpoints = np.array([float((values[i] + values[i + 1]) / 2) for i in picks])  # exact ties
    near = np.concatenate([np.nextafter(midpoints, np.inf), np.nextafter(midpoints, -np.inf)])
    scale = 10.0 ** rng.uniform(-45 if dtype == "BF16" else -9, 39 if dtype == "BF16" else 5, 2000)
    top, tiny = float(values[-2]), float(values[1])
    edges = [0.0, -0.0, top, -top, float((values[-2] + values[-1]) / 2), np.nextafter(top, np.inf), tiny, tiny / 2,
             1.5 * tiny, 2.5 * tiny, tiny / 4, 1e300, -1e300]
    return np.concatenate([midpoints, -midpoints, near, rng.standard_normal(2000) * scale, edges])


@pytest.mark.parametrize("dtype", ["BF16", "F16"])
def test_rounding_matches_the_exact_reference(dtype: str) -> None:
    x = _samples(dtype, np.random.default_rng(7))
    mine = np.frombuffer(round_to_dtype(x, dtype), dtype="<u2")
    wrong = [(float(v), int(m), reference_bits(float(v), dtype)) for v, m in zip(x, mine, strict=True)
             if int(m) != reference_bits(float(v), dtype)]
    assert wrong == []


def test_rounding_agrees_with_numpy_f16_and_torch_bf16() -> None:
    import torch

    rng = np.random.default_rng(11)
    x = rng.standard_normal(20000) * 10.0 ** rng.uniform(-8, 5, 20000)
    with np.errstate(over="ignore"):
        assert round_to_dtype(x, "F16") == x.astype("<f2").tobytes()  # numpy converts float64 → float16 directly
    f32 = (rng.standard_normal(20000) * 10.0 ** rng.uniform(-40, 38, 20000)).astype(np.float32)
    # torch rounds float32 → bfloat16 to nearest even; from a float32 value that is a single rounding, as ours
    theirs = torch.from_numpy(f32).to(torch.bfloat16).view(torch.int16).numpy().astype("<i2").tobytes()
    assert round_to_dtype(f32.astype(np.float64), "BF16") == theirs


def test_nan_and_infinity_survive() -> None:
    out = np.frombuffer(round_to_dtype(np.array([np.nan, np.inf, -np.inf]), "BF16"), dtype="<u2")
    assert [hex(v) for v in out] == ["0x7fc0", "0x7f80", "0xff80"]
    assert np.isnan(to_float64(round_to_dtype(np.array([np.nan]), "F16"), "F16")[0])


# --- refused adapters ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("override", "named"), [
    ({"use_dora": True}, "use_dora"), ({"use_rslora": True}, "use_rslora"),
    ({"rank_pattern": {"q_proj": 4}}, "rank_pattern"), ({"alpha_pattern": {"q_proj": 4}}, "alpha_pattern"),
    ({"modules_to_save": ["lm_head"]}, "modules_to_save"), ({"lora_bias": True}, "lora_bias"),
    ({"fan_in_fan_out": True}, "fan_in_fan_out"), ({"bias": "all"}, "bias"),
    ({"init_lora_weights": "pissa"}, "init_lora_weights"), ({"peft_type": "IA3"}, "peft_type"),
    ({"alora_invocation_tokens": [1, 2]}, "alora_invocation_tokens"), ({"r": 0}, "r must"),
    ({"lora_alpha": "16"}, "lora_alpha"), ({"loftq_config": {"loftq_bits": 4}}, "loftq_config"),
    # PEFT honours these when loading (skipped targets, another base revision): found in review
    ({"layers_to_transform": [0]}, "layers_to_transform"), ({"layers_pattern": "layers"}, "layers_pattern"),
    ({"exclude_modules": ["v_proj"]}, "exclude_modules"), ({"revision": "other"}, "revision"),
])
def test_unsupported_settings_are_refused_in_one_line(override: dict[str, Any], named: str) -> None:
    with pytest.raises(AdapterError) as info:
        read_adapter_config(peft_config(**override))
    assert named in str(info.value) and "\n" not in str(info.value) and info.value.exit_code == 2


def test_the_trainers_config_and_plain_lora_are_accepted(tiny_run: Any) -> None:
    recipe = read_adapter_config(tiny_run.run_dir / "checkpoints" / "000003" / "adapter_config.json")
    assert (recipe.r, recipe.alpha, recipe.scale) == (8, 16.0, 2.0)


def test_adapters_that_do_not_fit_the_base_are_refused(hand: tuple[Path, Path], tmp_path: Path) -> None:
    base, _ = hand
    cases = {
        "other": ({"layer.k.weight": (A, B)}, "does not have"),
        "shape": ({"layer.q.weight": (A[:, :2], B)}, "shapes do not fit"),
        "rank": ({"layer.q.weight": (A[:1], B[:, :1])}, "shapes do not fit"),
    }
    for name, (matrices, message) in cases.items():
        adapter = write_adapter(tmp_path / name, matrices, config=peft_config(r=2, lora_alpha=4))
        with pytest.raises(AdapterError, match=message):
            merged_tensor_digest(base, adapter / "adapter_model.safetensors", adapter / "adapter_config.json")
    embed = tmp_path / "embed"
    write_adapter(embed, {"layer.q.weight": (A, B)}, config=peft_config(r=2, lora_alpha=4))
    (embed / "adapter_model.safetensors").write_bytes(encode({
        "base_model.model.embed.lora_embedding_A": A, "base_model.model.embed.lora_embedding_B": B}))
    with pytest.raises(AdapterError, match="not a LoRA A/B matrix"):
        merged_tensor_digest(base, embed / "adapter_model.safetensors", embed / "adapter_config.json")


def test_write_merged_refuses_a_used_directory_and_a_missing_checkpoint(hand: tuple[Path, Path],
                                                                        tmp_path: Path) -> None:
    base, adapter = hand
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("keep me")
    with pytest.raises(UsageError, match="not an empty directory"):
        write_merged(base, adapter, tmp_path / "used")
    assert (tmp_path / "used" / "x").read_text() == "keep me"
    with pytest.raises(UsageError, match=r"no adapter_model\.safetensors"):
        write_merged(base, tmp_path / "used", tmp_path / "out")
    (base / "model.safetensors").write_bytes(b"\x80\x04pickle")
    with pytest.raises(FormatError, match="pickle"):
        write_merged(base, adapter, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.partial-*"))


# --- the real tiny model ---------------------------------------------------------------------------------------------

def test_same_digest_in_a_fresh_process_without_torch(tiny_run: Any, tiny_model_dir: Path) -> None:
    last = tiny_run.run_dir / "checkpoints" / "000003"
    here = merged_tensor_digest(tiny_model_dir, last / "adapter_model.safetensors", last / "adapter_config.json")
    assert json.loads((tiny_run.run_dir / "merged.json").read_bytes())["tensor_digest"] == str(here)
    code = textwrap.dedent(f"""
        import importlib.abc, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "transformers", "peft"):
                    raise ModuleNotFoundError(name)
        sys.meta_path.insert(0, Block())
        from provenance.merge import merged_tensor_digest
        print(merged_tensor_digest({str(tiny_model_dir)!r}, {str(last / "adapter_model.safetensors")!r},
                                   {str(last / "adapter_config.json")!r}))
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(here)


def test_transformers_loads_the_merge_with_pefts_logits(tiny_run: Any, tiny_model_dir: Path,
                                                        tmp_path: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    last = tiny_run.run_dir / "checkpoints" / "000003"
    one = write_merged(tiny_model_dir, last, tmp_path / "one")
    shards = write_merged(tiny_model_dir, last, tmp_path / "shards", max_shard_bytes=64 * 1024)
    assert one.files == ("model.safetensors",) and len(shards.files) > 2
    index = json.loads((shards.path / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(shards.files)
    assert one.tensor_digest == shards.tensor_digest == tensor_digest_of_files(
        [shards.path / f for f in shards.files])
    assert (shards.path / "tokenizer.json").read_bytes() == (tiny_model_dir / "tokenizer.json").read_bytes()
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, local_files_only=True)
    peft = PeftModel.from_pretrained(base, last).merge_and_unload()  # PEFT merges with torch: close, not bitwise
    tokens = torch.randint(0, 512, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = peft(tokens).logits
        for merged in (one, shards):
            model = AutoModelForCausalLM.from_pretrained(merged.path, local_files_only=True)
            assert torch.allclose(model(tokens).logits, expected, rtol=0, atol=1e-5)
    untouched = read_tensors((tiny_model_dir / "model.safetensors").read_bytes())
    ours = read_tensors((one.path / "model.safetensors").read_bytes())
    changed = sorted(n for n in ours if not np.array_equal(ours[n], untouched[n]))
    assert changed and all(n.endswith(("q_proj.weight", "v_proj.weight")) for n in changed)


def test_prov_merge_cli(tiny_run: Any, tiny_model_dir: Path, tmp_path: Path,
                        capsys: pytest.CaptureFixture[str]) -> None:
    from provenance.cli import main

    last = tiny_run.run_dir / "checkpoints" / "000003"
    assert main(["merge", str(last), "--base-model", str(tiny_model_dir), "--out", str(tmp_path / "m"),
                 "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["tensor_digest"] == json.loads((tiny_run.run_dir / "merged.json").read_bytes())["tensor_digest"]
    dora = tmp_path / "dora"
    write_adapter(dora, {}, config=peft_config(use_dora=True))
    assert main(["merge", str(dora), "--base-model", str(tiny_model_dir), "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("prov: error: ") and "use_dora" in err and err.count("\n") == 1


# --- the trainer commits it; prov verify finds it ---------------------------------------------------------------------

def test_the_trainer_records_the_merged_digest_and_resume_does_too(tiny_run: Any, tiny_model_dir: Path,
                                                                    tiny_config: Any, fixed_secrets: Any,
                                                                    tmp_path: Path) -> None:
    import shutil

    from training.trainer import resume, train

    record = json.loads((tiny_run.run_dir / "merged.json").read_bytes())
    last = tiny_run.run_dir / "checkpoints" / "000003"
    from provenance.merge import merged_manifest

    manifest = merged_manifest(tiny_model_dir, last / "adapter_model.safetensors", last / "adapter_config.json")
    assert record == {
        "adapter": str(tiny_run.weights), "base_model": json.loads((tiny_run.run_dir / "run.json").read_bytes())[
            "base_model"]["digest"], "checkpoint": 3, "format": "prov.merged.v2", "recipe": "prov.merge.v1",
        "tensor_digest": str(merged_tensor_digest(tiny_model_dir, last / "adapter_model.safetensors",
                                                  last / "adapter_config.json")),
        "manifest": manifest.to_json(), "manifest_digest": str(manifest.digest())}  # prov.merged-dir.v1 (#20)
    copy = shutil.copytree(tiny_run.run_dir, tmp_path / "run")
    (copy / "merged.json").unlink()
    resume(copy, quiet=True)  # every step was done: resuming only finishes the run, finalisation included
    assert json.loads((copy / "merged.json").read_bytes()) == record
    open_run = train(tiny_config(tmp_path / "open", **{"anchor.finalize": False, "training.steps": 2}),
                     secrets=fixed_secrets, quiet=True)
    assert not (open_run.run_dir / "merged.json").exists()


@pytest.fixture
def finalised(tiny_run: Any, tiny_model_dir: Path, tmp_path: Path) -> tuple[Any, Path, Any]:
    """The shared tiny run anchored on an in-process chain and finalised with the merged digest it recorded."""
    from tests.fixtures.merge import finalize_with_merged
    from tests.fixtures.verify import VerifyEnv

    env = VerifyEnv(tmp_path)
    run = env.copy(tiny_run.run_dir)
    merged = write_merged(tiny_model_dir, run / "checkpoints" / "000003", tmp_path / "merged")
    assert finalize_with_merged(env, run) == merged.manifest_digest  # prov.merged-dir.v1 (#20)
    return env, run, merged


def test_a_merged_model_verifies_through_its_finalisation(finalised: tuple[Any, Path, Any],
                                                          tiny_model_dir: Path) -> None:
    from provenance.exports import model_card
    from provenance.report import publishable, render_html, render_text
    from tests.fixtures.verify import check

    env, run, merged = finalised
    report = env.verify(merged.path)
    assert report["verdict"] == "verified" and report["subject"]["kind"] == "merged", report["checks"]
    assert [c["id"] for c in report["checks"]][:4] == ["record", "run_manifest", "checkpoint", "merge"]
    assert report["subject"]["tensor_digest"] == str(merged.tensor_digest)
    assert "not recomputed" in check(report, "merge")["summary"]
    assert any("--base-model to recompute" in n for n in report["not_checked"])
    assert [(c["match"], c["index"], c["selected"]) for c in report["claims"]] == [("merged", 3, True)]
    assert [c["index"] for c in report["lineage"] if c["is_subject"]] == [3]
    assert "This merged model's lineage checks out" in render_text(report)
    assert "Merged weights are the committed adapter" in render_html(report)
    assert publishable(report)["subject"]["kind"] == "merged" and "base model" in model_card(report)
    single = env.verify(merged.path / "model.safetensors")
    assert single["verdict"] == "verified" and single["subject"]["kind"] == "merged"
    full = env.verify(merged.path, base_model=tiny_model_dir, replay="0")
    assert full["verdict"] == "verified", full["checks"]
    assert check(full, "merge")["summary"].startswith("recomputed from the registered base model")
    adapter = env.verify(run / "checkpoints" / "000003" / "adapter_model.safetensors")
    assert adapter["subject"]["kind"] == "adapter" and "merge" not in [c["id"] for c in adapter["checks"]]


def test_converted_copies_verify_with_base_model_and_adapter(finalised: tuple[Any, Path, Any], tiny_model_dir: Path,
                                                              tmp_path: Path) -> None:
    from tests.fixtures.merge import alter_weight, convert
    from tests.fixtures.verify import check, failed

    env, run, merged = finalised
    adapter = run / "checkpoints" / "000003" / "adapter_model.safetensors"
    f16 = convert(merged.path, tmp_path / "f16", "float16")
    alone = env.verify(f16)
    assert alone["verdict"] == "failed" and failed(alone) == ["record"]
    assert "--adapter" in alone["next_steps"][0]
    report = env.verify(f16, base_model=tiny_model_dir, adapter=adapter, replay="0")
    assert report["verdict"] == "verified", report["checks"]
    assert check(report, "merge")["summary"].startswith(
        "a converted copy (float16) of the merge committed at finalisation")
    # save_pretrained wrote config.json with the new dtype and no tokenizer: tolerated, and said (#20)
    assert check(report, "merged_files")["status"] == "passed" and "dtype" in check(report, "merged_files")["summary"]
    assert any("tokenizer.json absent" in w for w in report["warnings"]), report["warnings"]
    changed = tmp_path / "f16-changed"
    import shutil

    shutil.copytree(f16, changed)
    config = json.loads((changed / "config.json").read_text())
    config["hidden_act"] = "gelu"
    (changed / "config.json").write_text(json.dumps(config))
    report = env.verify(changed, base_model=tiny_model_dir, adapter=adapter, replay="0")
    assert failed(report) == ["merged_files"] and "hidden_act" in check(report, "merged_files")["summary"]
    bf16 = convert(merged.path, tmp_path / "bf16", "bfloat16", max_shard_size="100KB")
    assert len(list(bf16.glob("*.safetensors"))) > 1
    report = env.verify(bf16, base_model=tiny_model_dir, adapter=adapter, replay="0")
    assert report["verdict"] == "verified" and "(bfloat16)" in check(report, "merge")["summary"]
    alter_weight(f16 / "model.safetensors", "model.layers.1.mlp.up_proj.weight", delta=0.01, index=5)
    report = env.verify(f16, base_model=tiny_model_dir, adapter=adapter, replay="0")
    assert report["exit_code"] == 1 and failed(report) == ["merge"], report["checks"]
    merge = check(report, "merge")
    assert "'model.layers.1.mlp.up_proj.weight' differs from the recomputed merge cast to float16" in merge["summary"]
    assert merge["expected"].startswith("model.layers.1.mlp.up_proj.weight[5] = ")


def test_a_merge_into_another_base_model_fails(finalised: tuple[Any, Path, Any], tiny_model_dir: Path,
                                               tmp_path: Path) -> None:
    from tests.fixtures.verify import check, failed
    from training.tiny import build_tiny_model

    env, run, _ = finalised
    other = build_tiny_model(tmp_path / "other-base", seed=1)
    last = run / "checkpoints" / "000003"
    wrong = write_merged(other, last, tmp_path / "wrong")
    report = env.verify(wrong.path)
    assert report["exit_code"] == 1 and failed(report) == ["record"]
    report = env.verify(wrong.path, base_model=tiny_model_dir, adapter=last / "adapter_model.safetensors",
                        replay="0")
    assert report["exit_code"] == 1 and failed(report) == ["merge"]
    assert "differs from the recomputed merge" in check(report, "merge")["summary"]


def test_bad_input_is_a_one_line_error(hand: tuple[Path, Path], tmp_path: Path) -> None:
    from tests.fixtures.verify import VerifyEnv

    env = VerifyEnv(tmp_path)
    base, adapter = hand
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_text("{}")
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text("{}")
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    cases: list[tuple[Path, dict[str, Any], type[Exception], str]] = [
        (bare, {}, UsageError, "no \\*.safetensors"),
        (pickled, {}, UsageError, "pickle format"),
        (pickled / "pytorch_model.bin", {}, FormatError, "pickle"),
        (base, {"adapter": adapter / "adapter_model.safetensors"}, UsageError, "--adapter needs --base-model"),
        (adapter / "adapter_model.safetensors", {"adapter": adapter / "adapter_model.safetensors",
                                                 "base_model": base}, UsageError, "--adapter is for a merged model"),
    ]
    for path, options, kind, message in cases:
        with pytest.raises(kind, match=message) as info:
            env.verify(path, **options)
        assert info.value.exit_code == 2 and "\n" not in str(info.value)  # type: ignore[attr-defined]
