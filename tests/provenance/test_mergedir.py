"""The merged-directory manifest a finalisation commits (`prov.merged-dir.v1`, #20): which files it binds, that it
does not depend on sharding, and that an untrusted copy of it is parsed strictly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from provenance import mergedir
from provenance.basemodel import base_model_manifest
from provenance.errors import FormatError
from provenance.hashing import Digest
from provenance.loaders import loader_problems
from provenance.manifest import FileEntry
from tests.fixtures.golden import GOLDEN


def test_the_manifest_lists_every_file_a_loader_reads_but_weights_docs_and_itself(tmp_path: Path) -> None:
    for name, text in {"config.json": "{}", "tokenizer.json": "{}", "generation_config.json": "{}",
                       "model.safetensors": "w", "README.md": "x", ".gitattributes": "x",
                       mergedir.MANIFEST_FILE: "{}", "notes.txt": "n"}.items():
        (tmp_path / name).write_text(text)
    names = mergedir.bound_names(tmp_path)
    assert names == ["config.json", "generation_config.json", "notes.txt", "tokenizer.json"]
    here = mergedir.of_directory(tmp_path, Digest.of(b"t"))
    assert [f.path for f in here.files] == names and here.tensors == Digest.of(b"t")
    changed = tmp_path / "tokenizer.json"
    changed.write_text('{"x": 1}')
    diff = mergedir.differences(here, mergedir.of_directory(tmp_path, Digest.of(b"t")))
    assert len(diff) == 1 and diff[0].startswith("tokenizer.json (changed")
    (tmp_path / "notes.txt").unlink()
    assert any(d.startswith("notes.txt (committed, missing") for d in
               mergedir.differences(here, mergedir.of_directory(tmp_path, Digest.of(b"t"))))


def test_what_prov_merge_writes_is_what_the_trainer_commits_whatever_the_sharding(tiny_run: Any, tiny_model_dir: Path,
                                                                                  tmp_path: Path) -> None:
    from provenance.merge import merged_manifest, write_merged

    adapter = tiny_run.run_dir / "checkpoints" / "000003"
    committed = merged_manifest(tiny_model_dir, adapter / "adapter_model.safetensors",
                                adapter / "adapter_config.json")
    one = write_merged(tiny_model_dir, adapter, tmp_path / "one")
    shards = write_merged(tiny_model_dir, adapter, tmp_path / "shards", max_shard_bytes=64 << 10)
    assert len(shards.files) > 1
    assert one.manifest_digest == shards.manifest_digest == committed.digest()
    beside = mergedir.read_beside(one.path)
    assert beside is not None and beside[1] == committed.digest()
    assert loader_problems(one.path, links="none") == [] and loader_problems(shards.path, links="none") == []
    assert {f.path for f in committed.files} == {e.path for e in base_model_manifest(tiny_model_dir).files
                                                 if not mergedir.is_weights_file(e.path)}


def test_an_untrusted_manifest_is_parsed_strictly() -> None:
    data = (GOLDEN / "merged-dir.v1.json").read_bytes()
    assert mergedir.parse(data, source="golden").encode() == data
    doc = json.loads(data)
    for bad in ({**doc, "extra": 1}, {**doc, "format": "prov.merged-dir.v9"}, {**doc, "recipe": "other"},
                {**doc, "files": [{**doc["files"][0], "path": "sub/config.json"}]},
                {**doc, "files": [{**doc["files"][0], "size": -1}]},
                {**doc, "files": [doc["files"][0], doc["files"][0]]}):
        with pytest.raises(FormatError):
            mergedir.parse(json.dumps(bad, sort_keys=True, separators=(",", ":")).encode(), source="bad")
    with pytest.raises(FormatError, match="canonical"):
        mergedir.parse(json.dumps(doc, indent=1).encode(), source="spaced")
    assert mergedir.build(Digest.of(b"t"), [FileEntry("b", Digest.of(b"b"), 1), FileEntry("a", Digest.of(b"a"), 1)]
                          ).files[0].path == "a"


def test_loader_problems_name_what_makes_transformers_read_elsewhere(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A merged directory is held to the same loader rules as a base directory, and to no links at all."""
    import shutil

    copy = tmp_path / "m"
    shutil.copytree(tiny_model_dir, copy)
    assert loader_problems(copy, links="none") == []
    (copy / "adapter_config.json").write_text("{}")
    (copy / "extra.safetensors").write_bytes((copy / "model.safetensors").read_bytes())
    (copy / "generation_config.json").unlink()
    (copy / "generation_config.json").symlink_to(tiny_model_dir / "generation_config.json")
    found = " | ".join(loader_problems(copy, links="none"))
    assert "adapter_config.json: with PEFT installed" in found
    assert "extra.safetensors beside model.safetensors" in found
    assert "generation_config.json is a symbolic link" in found
    assert "leaving the directory" in " ".join(loader_problems(copy, links="inside"))
    assert "generation_config" not in " ".join(loader_problems(copy, links="any"))


@pytest.mark.parametrize("name", ["README.safetensors", ".moved.safetensors", "LICENSE.safetensors"])
def test_weights_under_a_documentation_or_hidden_name_are_refused(tiny_model_dir: Path, tmp_path: Path,
                                                                  name: str) -> None:
    """A tensor moved out of model.safetensors into a file named like documentation (or hidden) keeps the digest of
    the directory's weights, which hashes every *.safetensors file, but transformers never loads that file and
    re-initialises the tensor: the layout check names it (found in review)."""
    import shutil

    from provenance._verify.subject import load_subject
    from provenance.safetensors import read_header, read_tensors, tensor_digest_of_files
    from tests.fixtures.merge import encode

    copy = tmp_path / "m"
    shutil.copytree(tiny_model_dir, copy)
    source = copy / "model.safetensors"
    honest = tensor_digest_of_files(load_subject(copy).files)
    tensors = read_tensors(source.read_bytes())
    moved = sorted(tensors)[0]
    metadata = read_header(source).metadata
    source.write_bytes(encode({k: v for k, v in tensors.items() if k != moved}, metadata))
    (copy / name).write_bytes(encode({moved: tensors[moved]}, metadata))
    assert tensor_digest_of_files(load_subject(copy).files) == honest  # the tensor digest alone cannot tell
    assert f"{name} beside model.safetensors: never loaded" in " | ".join(loader_problems(copy, links="none"))
