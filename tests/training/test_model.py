"""Base-model checks and digest, the model builder (`prov init-model --size tiny|small`), and the refusal of
pickle-only models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from provenance.basemodel import base_model_manifest, base_model_summary, check_model_dir
from provenance.cli import main
from provenance.errors import UsageError
from provenance.hashing import hash_file

# SHA-256 of the tiny model's files. All but chat_template.jinja were recorded before the chat template was added
# (prov 0.1, seed 0), so they prove the weights and tokenizer stayed byte-identical; the template file is new, so
# the tiny model's base-model digest changed once, with it.
TINY_FILES = {
    "config.json": "311b5aed0a79268a8169ae4eae98986dbda5b6d41158e61e7422eb98d656e1e0",
    "generation_config.json": "e9c42bd8c4e08af12d7090aa6d4ad66489ade8373cd9b7d49f651c60103ce14c",
    "model.safetensors": "c57cc8b0b44b51624761141cc21083eaaa7c6d3b335ba08a3a946da49113fa84",
    "tokenizer.json": "078a6b82ecf487a3b1d1fa6a6a6cf437fdcb92c1684ec5f293c7135053239b03",
    "tokenizer_config.json": "35c49649703c869bcc94ce0c259281124b35bba41af40686bf6b97cf898e8e2e",
    "chat_template.jinja": "04c38bc7c568fc7b282fc04083072acd3db786249ea33c558c3e169c90345a1d",
}


def test_tiny_model_has_expected_files_and_reloads(tiny_model_dir: Path) -> None:
    names = {p.name for p in tiny_model_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
    from training.model import load_base_model

    model, tokenizer = load_base_model(tiny_model_dir)
    assert model.config.hidden_size == 64 and model.config.num_hidden_layers == 2
    assert model.config._attn_implementation == "eager"
    assert tokenizer.pad_token_id == 0


def test_tiny_model_is_deterministic(tiny_model_dir: Path, tmp_path: Path) -> None:
    from training.tiny import build_tiny_model

    again = build_tiny_model(tmp_path / "again")
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert hash_file(again / name) == hash_file(tiny_model_dir / name), name
    with pytest.raises(UsageError, match="not empty"):
        build_tiny_model(again)


def test_tiny_model_bytes_are_pinned(tiny_model_dir: Path) -> None:
    assert {p.name for p in tiny_model_dir.iterdir()} == set(TINY_FILES)
    for name, digest in TINY_FILES.items():
        assert hash_file(tiny_model_dir / name).value.hex() == digest, name


def test_init_model_size_tiny_and_its_alias(isolated_state: Path, tiny_model_dir: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init-model", "--size", "tiny", str(tmp_path / "a")]) == 0
    assert main(["init-model", "--tiny", str(tmp_path / "b")]) == 0
    assert main(["init-model", str(tmp_path / "c")]) == 0  # tiny is the default
    assert "tiny model written to" in capsys.readouterr().out
    for name in ("a", "b", "c"):
        assert base_model_manifest(tmp_path / name).digest() == base_model_manifest(tiny_model_dir).digest()
    assert main(["init-model", "--tiny", "--size", "small", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "--tiny and --size small contradict" in err and err.count("\n") == 1
    assert not (tmp_path / "d").exists()


@pytest.mark.slow
def test_init_model_size_small_builds_a_loadable_100m_model(isolated_state: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    from training.model import load_base_model

    assert main(["init-model", "--size", "small"]) == 0  # default directory: <state>/models/small
    target = isolated_state / "models" / "small"
    assert f"small model written to {target}" in capsys.readouterr().out
    model, tokenizer = load_base_model(check_model_dir(target))
    cfg = model.config
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.intermediate_size) == (
        768, 12, 12, 2048)
    assert cfg.vocab_size == len(tokenizer) == 512 and tokenizer.chat_template
    assert sum(p.numel() for p in model.parameters()) == 85_740_288
    # the tokenizer is the tiny model's: same files, byte for byte
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        assert hash_file(target / name).value.hex() == TINY_FILES[name], name
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([tokenizer("hello world")["input_ids"]])).logits
    assert logits.shape[-1] == 512 and torch.isfinite(logits).all()
    # deterministic from the seed; another seed, other weights
    again = main(["init-model", "--size", "small", str(isolated_state / "again")])
    assert again == 0 and hash_file(isolated_state / "again" / "model.safetensors") == hash_file(
        target / "model.safetensors")
    assert main(["init-model", "--size", "small", "--seed", "1", str(isolated_state / "other")]) == 0
    assert hash_file(isolated_state / "other" / "model.safetensors") != hash_file(target / "model.safetensors")


def test_base_digest_covers_weights_config_tokenizer_only(tiny_model_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "m"
    shutil.copytree(tiny_model_dir, copy)
    digest = base_model_manifest(copy).digest()
    assert digest == base_model_manifest(tiny_model_dir).digest()
    (copy / "README.md").write_text("hello")
    assert base_model_manifest(copy).digest() == digest
    summary = base_model_summary(copy)
    assert summary["architecture"] == "LlamaForCausalLM" and summary["digest"] == str(digest)
    for name in ("config.json", "tokenizer.json"):
        path = copy / name
        original = path.read_bytes()
        path.write_bytes(original.replace(b"}", b" }", 1))
        assert base_model_manifest(copy).digest() != digest, name
        path.write_bytes(original)


def test_model_directory_errors(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not found"):
        check_model_dir(tmp_path / "absent")
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="not a directory"):
        check_model_dir(tmp_path / "file")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UsageError, match=r"no config\.json"):
        check_model_dir(empty)
    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, pickled)
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    with pytest.raises(UsageError, match="pickle"):
        check_model_dir(pickled)


def test_unknown_lora_target_is_named(tiny_model_dir: Path) -> None:
    from training.config import LoraSettings
    from training.model import add_lora, load_base_model

    model, _ = load_base_model(tiny_model_dir)
    with pytest.raises(UsageError, match="wq_proj"):
        add_lora(model, LoraSettings(target_modules=("q_proj", "wq_proj")), seed=0)


def test_the_base_model_digest_covers_what_symbolic_links_point_to(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A Hugging Face cache snapshot is all symbolic links: its digest is that of the files behind them, so two
    linked directories of different models never share a digest."""
    linked = tmp_path / "linked"
    linked.mkdir()
    for file in tiny_model_dir.iterdir():
        (linked / file.name).symlink_to(file)
    manifest = base_model_manifest(linked)
    assert manifest.digest() == base_model_manifest(tiny_model_dir).digest()
    assert "model.safetensors" in {e.path for e in manifest.files}
    (linked / "model.safetensors").unlink()
    changed = tmp_path / "changed.safetensors"
    changed.write_bytes((tiny_model_dir / "model.safetensors").read_bytes()[:-1] + b" ")
    (linked / "model.safetensors").symlink_to(changed)
    assert base_model_manifest(linked).digest() != manifest.digest()


@pytest.mark.parametrize(("name", "content", "message"), [
    ("adapter_config.json", "{}", "PEFT adapter"),
    ("spiece.model", "x", r"spiece\.model would not be covered"),
    ("custom_tokenizer.py", "x", r"custom_tokenizer\.py would not be covered"),
])
def test_a_base_model_directory_with_files_the_digest_would_miss_is_refused(
        name: str, content: str, message: str, tiny_model_dir: Path, tmp_path: Path) -> None:
    """Whatever the loader could read must be in the digest: an adapter config (transformers would load the model
    it names) or an unknown file (a vocabulary, code) is refused with what to do."""
    copy = tmp_path / "model"
    shutil.copytree(tiny_model_dir, copy)
    (copy / name).write_text(content)
    with pytest.raises(UsageError, match=message):
        check_model_dir(copy)


def test_documentation_and_other_weight_formats_are_ignored(tiny_model_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "model"
    shutil.copytree(tiny_model_dir, copy)
    for name in ("README.md", "LICENSE", ".gitattributes", "USE_POLICY.md", "pytorch_model.bin", "flax_model.msgpack"):
        (copy / name).write_text("x")
    (copy / ".cache").mkdir()  # hidden folders (huggingface-cli's local-dir metadata) are never read
    assert base_model_manifest(copy).digest() == base_model_manifest(tiny_model_dir).digest()
    (copy / "original").mkdir()  # any other folder may be where a config key or the tokenizer reads: refused
    with pytest.raises(UsageError, match=r"original/ is a sub-folder"):
        check_model_dir(copy)


def test_every_shard_of_the_weight_index_must_be_in_the_digest(tiny_model_dir: Path, tmp_path: Path) -> None:
    """transformers loads the shards the index names, wherever they are: each must be a top-level file."""
    copy = tmp_path / "model"
    shutil.copytree(tiny_model_dir, copy)
    (copy / "sub").mkdir()
    (copy / "model.safetensors").rename(copy / "sub" / "model.safetensors")
    (copy / "model-00001-of-00001.safetensors").write_bytes((copy / "sub" / "model.safetensors").read_bytes())
    index = {"metadata": {}, "weight_map": {"lm_head.weight": "sub/model.safetensors"}}
    (copy / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(UsageError, match=r"shard 'sub/model\.safetensors' is not a safetensors file at the top"):
        check_model_dir(copy)
    index["weight_map"]["lm_head.weight"] = "model-00001-of-00001.safetensors"
    (copy / "model.safetensors.index.json").write_text(json.dumps(index))
    shutil.rmtree(copy / "sub")
    assert check_model_dir(copy) == copy
    # a shard the index does not name is hashed but never loaded; model.safetensors beside an index wins over it
    (copy / "model-00002-of-00002.safetensors").write_bytes((copy / "model-00001-of-00001.safetensors").read_bytes())
    with pytest.raises(UsageError, match=r"not named in model\.safetensors\.index\.json"):
        check_model_dir(copy)
    (copy / "model-00002-of-00002.safetensors").rename(copy / "model.safetensors")
    with pytest.raises(UsageError, match=r"transformers loads model\.safetensors and ignores the index"):
        check_model_dir(copy)


@pytest.mark.parametrize(("file", "key", "value"), [
    ("config.json", "transformers_weights", "sub/model.safetensors"),
    ("config.json", "configuration_files", ["config.json", "config.99.0.0.json"]),
    ("config.json", "auto_map", {"AutoModelForCausalLM": "modeling_x.XForCausalLM"}),
    ("config.json", "quantization_config", {"quant_method": "bitsandbytes", "load_in_8bit": True}),
    ("tokenizer_config.json", "auto_map", {"AutoTokenizer": ["tok.X", None]}),
    ("tokenizer_config.json", "fast_tokenizer_files", ["tokenizer.99.0.0.json"]),
])
def test_config_keys_that_make_the_loader_read_elsewhere_are_refused(
        file: str, key: str, value: object, tiny_model_dir: Path, tmp_path: Path) -> None:
    """Read like an adversary reads transformers 5.23: a key that points the loader at other weights, another
    config, remote code or a quantizer leaves the digest; the directory is refused, naming the key."""
    copy = tmp_path / "model"
    shutil.copytree(tiny_model_dir, copy)
    doc = json.loads((copy / file).read_text())
    doc[key] = value
    (copy / file).write_text(json.dumps(doc))
    with pytest.raises(UsageError, match=rf"{file} sets '{key}'"):
        check_model_dir(copy)


def test_a_redirect_key_really_loads_other_weights(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Why the key is refused: transformers honours `transformers_weights` (sub-folders allowed), so the same
    top-level files load other weights."""
    torch = pytest.importorskip("torch", reason="needs the train extra (torch) to load the model")
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM

    copy = tmp_path / "model"
    shutil.copytree(tiny_model_dir, copy)
    (copy / "w").mkdir()
    tensors = load_file(str(copy / "model.safetensors"))
    tensors["lm_head.weight"] = torch.zeros_like(tensors["lm_head.weight"])
    save_file(tensors, str(copy / "w" / "other.safetensors"), metadata={"format": "pt"})
    doc = json.loads((copy / "config.json").read_text())
    doc["transformers_weights"] = "w/other.safetensors"
    (copy / "config.json").write_text(json.dumps(doc))
    loaded = AutoModelForCausalLM.from_pretrained(copy, local_files_only=True)
    assert float(loaded.lm_head.weight.detach().abs().sum()) == 0.0  # not the top-level model.safetensors
    with pytest.raises(UsageError, match="transformers_weights"):
        check_model_dir(copy)
