"""Examples, the salted dataset root (against a naive reference), tokenization and batches of every kind of record
(text, prompt/completion, chat) with the tiny model's tokenizer."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from provenance import merkle
from provenance.dataset import dataset_root, example_leaf, load_examples
from provenance.errors import FormatError, UsageError
from training.data import DEMO_DATA

KEY = bytes(range(32))


def naive_root(texts: list[str], key: bytes) -> bytes:
    leaves = []
    for i, text in enumerate(texts):
        salt = hmac.new(key, b"example" + i.to_bytes(8, "big"), hashlib.sha256).digest()
        body = json.dumps({"text": text}, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        leaves.append(hashlib.sha256(b"\x00" + salt + body).digest())
    return merkle.root(leaves)


def test_dataset_root_matches_reference_and_depends_on_key_order_and_content() -> None:
    texts = ["alpha", "béta", "gamma \"quoted\"", "delta"]
    root = dataset_root(texts, KEY)
    assert root.value == naive_root(texts, KEY)
    assert dataset_root(texts, bytes(32)) != root
    assert dataset_root(list(reversed(texts)), KEY) != root
    assert dataset_root([*texts[:3], "delta!"], KEY) != root
    # a proof of one example against the root, as the verifier will do
    leaves = [example_leaf(KEY, i, t) for i, t in enumerate(texts)]
    proof = merkle.inclusion_proof(2, leaves)
    merkle.verify_inclusion(example_leaf(KEY, 2, texts[2]), 2, len(texts), proof, root.value)


def test_demo_dataset_loads() -> None:
    examples = load_examples(DEMO_DATA)
    assert len(examples) == 256 and all(isinstance(e, str) and e for e in examples)


def test_text_and_jsonl_formats(tmp_path: Path) -> None:
    text = tmp_path / "d.txt"
    text.write_text("first line\n\n  second line  \n")
    assert load_examples(text) == ["first line", "second line"]
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text('{"body": "x"}\n\n{"body": "y"}\n')
    assert load_examples(jsonl, text_field="body") == ["x", "y"]


def test_bad_datasets_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not found"):
        load_examples(tmp_path / "none.jsonl")
    with pytest.raises(UsageError, match="must be a file"):
        load_examples(tmp_path)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{not json}\n')
    with pytest.raises(FormatError, match="line 2"):
        load_examples(bad)
    missing = tmp_path / "missing.jsonl"
    missing.write_text('{"other": "x"}\n')
    with pytest.raises(FormatError, match="'text'"):
        load_examples(missing)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(UsageError, match="no examples"):
        load_examples(empty)


def test_tokenized_batches_as_fed(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    from provenance.batches import tokenize

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ds = tokenize(["a short one", "a much longer example " * 20], tok, max_length=16)
    batch = ds.batch([1, 0])
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    for arr in batch.values():
        assert arr.dtype == np.int64 and arr.shape == (2, 16)
    short = batch["attention_mask"][1]
    assert short.sum() < 16  # padded
    assert (batch["labels"][1][short == 0] == -100).all()
    assert (batch["labels"][0] == batch["input_ids"][0]).all()  # truncated, no padding
    empty = ds.batch([])
    assert all(a.shape == (0, 16) and a.dtype == np.int64 for a in empty.values())


# --- instruction data: labels only on what is trained ------------------------------------------------------------

CHAT = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "ok"}, {"role": "user", "content": "and?"},
        {"role": "assistant", "content": "the end"}]
# CHAT as the tiny model's template renders and its tokenizer splits it, written out by hand: (token, trained).
# The space after "assistant:" is inside the token "Ġo", which overlaps the reply, so it is trained with it.
CHAT_TOKENS = [
    ("<s>", 0), ("s", 0), ("y", 0), ("s", 0), ("t", 0), ("e", 0), ("m", 0), (":", 0), ("Ġbe", 0), ("Ġbri", 0),
    ("e", 0), ("f", 0), ("Ċ", 0), ("u", 0), ("s", 0), ("er", 0), (":", 0), ("Ġh", 0), ("i", 0), ("Ċ", 0),
    ("ass", 0), ("is", 0), ("t", 0), ("an", 0), ("t", 0), (":", 0), ("Ġo", 1), ("k", 1), ("</s>", 1), ("Ċ", 0),
    ("u", 0), ("s", 0), ("er", 0), (":", 0), ("Ġa", 0), ("nd", 0), ("?", 0), ("Ċ", 0), ("ass", 0), ("is", 0),
    ("t", 0), ("an", 0), ("t", 0), (":", 0), ("Ġthe", 1), ("Ġ", 1), ("en", 1), ("d", 1), ("</s>", 1),
]


def _tiny_tokenizer(model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


def _expected(tokenizer: Any, tokens: list[tuple[str, int]], max_length: int) -> dict[str, list[int]]:
    """input ids, attention mask and labels for a hand-written token list, truncated and padded with <pad>."""
    kept = tokens[:max_length]
    ids = tokenizer.convert_tokens_to_ids([t for t, _ in kept])
    pad = max_length - len(kept)
    return {"input_ids": ids + [0] * pad, "attention_mask": [1] * len(kept) + [0] * pad,
            "labels": [i if trained else -100 for i, (_, trained) in zip(ids, kept, strict=True)] + [-100] * pad}


@pytest.mark.parametrize("max_length", [52, 46])  # padded; truncated inside the second reply
def test_chat_labels_only_on_assistant_turns(tiny_model_dir: Path, max_length: int) -> None:
    from provenance.batches import tokenize_records

    tok = _tiny_tokenizer(tiny_model_dir)
    ds = tokenize_records([{"messages": CHAT}], tok, kind="chat", max_length=max_length)
    expected = _expected(tok, CHAT_TOKENS, max_length)
    batch = ds.batch([0])
    for name in ("input_ids", "attention_mask", "labels"):
        assert batch[name].dtype == np.int64 and batch[name].tolist() == [expected[name]], name


def test_prompt_completion_labels_only_on_completion_and_eos(tiny_model_dir: Path) -> None:
    from provenance.batches import tokenize_records

    tok = _tiny_tokenizer(tiny_model_dir)
    records = [{"prompt": "The", "completion": " of the"}, {"prompt": "The of the of", "completion": " of"}]
    ds = tokenize_records(records, tok, max_length=6)
    # hand-built: <s> + prompt tokens (no loss), completion tokens + </s> (loss), <pad> (no loss, mask 0)
    first = _expected(tok, [("<s>", 0), ("The", 0), ("Ġof", 1), ("Ġthe", 1), ("</s>", 1)], 6)
    second = _expected(tok, [("<s>", 0), ("The", 0), ("Ġof", 0), ("Ġthe", 0), ("Ġof", 0), ("Ġof", 1)], 6)
    for name in ("input_ids", "attention_mask", "labels"):
        assert ds.batch([0, 1])[name].tolist() == [first[name], second[name]], name


def test_text_records_tokenize_exactly_as_texts(tiny_model_dir: Path) -> None:
    """Text data keeps `labels=None` (input ids under the mask), so batch digests of earlier runs are unchanged."""
    from provenance.batches import tokenize, tokenize_records
    from provenance.dataset import Records

    tok = _tiny_tokenizer(tiny_model_dir)
    texts = load_examples(DEMO_DATA)[:8]
    old = tokenize(texts, tok, max_length=32)
    for given in (texts, Records("text", tuple({"text": t} for t in texts))):
        new = tokenize_records(given, tok, max_length=32)
        assert new.labels is None
        assert (new.input_ids == old.input_ids).all() and (new.attention_mask == old.attention_mask).all()


def test_assistant_spans_agree_with_generation_markers(tiny_model_dir: Path) -> None:
    """The tiny template has {% generation %} markers: transformers' own assistant mask must equal ours."""
    from provenance.batches import tokenize_records

    tok = _tiny_tokenizer(tiny_model_dir)
    conversations = [
        CHAT,
        [{"role": "user", "content": "é ✓ multi-byte 日本"}, {"role": "assistant", "content": "日本 ✓"}],
        [{"role": "user", "content": "a"}, {"role": "assistant", "content": ""},
         {"role": "user", "content": "b"}, {"role": "assistant", "content": "  spaced\n\nlines  "}],
        [{"role": "user", "content": "x"}, {"role": "assistant", "content": "</s> inside"}, {"role": "user",
                                                                                           "content": "last"}],
    ]
    for messages in conversations:
        theirs = tok.apply_chat_template(messages, tokenize=True, return_assistant_tokens_mask=True, return_dict=True)
        n = len(theirs["input_ids"])
        ours = tokenize_records([{"messages": messages}], tok, max_length=n + 2)
        assert ours.input_ids[0, :n].tolist() == list(theirs["input_ids"])
        assert (ours.labels[0, :n] != -100).astype(int).tolist() == list(theirs["assistant_masks"]), messages


def test_chat_rendering_is_deterministic_across_processes(tiny_model_dir: Path) -> None:
    import subprocess
    import sys

    from provenance.batches import render_chat

    tok = _tiny_tokenizer(tiny_model_dir)
    text, spans = render_chat(CHAT, tok)
    # golden: the tiny template's rendering, written out by hand
    assert text == "<s>system: be brief\nuser: hi\nassistant: ok</s>\nuser: and?\nassistant: the end</s>"
    assert [text[a:b] for a, b in spans] == ["ok</s>", "the end</s>"]
    assert render_chat(CHAT, _tiny_tokenizer(tiny_model_dir)) == (text, spans)
    code = ("import json, sys; from transformers import AutoTokenizer; from provenance.batches import render_chat; "
            "print(json.dumps(render_chat(json.loads(sys.argv[2]), AutoTokenizer.from_pretrained(sys.argv[1]))))")
    out = subprocess.run([sys.executable, "-c", code, str(tiny_model_dir), json.dumps(CHAT)], capture_output=True,
                         text=True, check=True, env={"PYTHONHASHSEED": "123", "PATH": "/usr/bin:/bin"})
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [text, [list(s) for s in spans]]


def test_chat_tokenization_errors_are_one_line(tiny_model_dir: Path) -> None:
    from provenance.batches import tokenize_records
    from provenance.errors import ProvenanceError

    def check(records: list[Any], tok: Any, error: type[ProvenanceError], message: str, **kw: Any) -> None:
        with pytest.raises(error, match=message) as info:
            tokenize_records(records, tok, max_length=16, **kw)
        assert "\n" not in str(info.value)

    tok = _tiny_tokenizer(tiny_model_dir)
    chat = {"messages": CHAT}
    check([{"messages": [{"role": "assistant", "content": "hi"}]}], tok, FormatError, "starts with an assistant")
    check([chat, {"prompt": "p", "completion": "c"}], tok, FormatError, "example 1 is a prompt_completion record")
    check([chat], tok, UsageError, "unknown data kind", kind="poem")
    tok.chat_template = "{{ raise_exception('roles must alternate') }}"
    check([chat], tok, FormatError, "example 0: the chat template failed: roles must alternate")
    # a template that shows only the last two messages: a prefix does not render as a prefix of the whole
    tok.chat_template = "{% for m in messages[-2:] %}{{ m['role'] + ': ' + m['content'] + '|' }}{% endfor %}"
    check([chat], tok, FormatError, "does not render message 2 as a prefix")
    tok.chat_template = None
    check([chat], tok, UsageError, "has no chat template")


def test_tokenization_needs_no_torch(tiny_model_dir: Path) -> None:
    """The verifier rebuilds batches with `transformers` for the tokenizer and without torch."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['torch'] = None; from transformers import AutoTokenizer; "
            "from provenance.batches import tokenize_records; tok = AutoTokenizer.from_pretrained(sys.argv[1]); "
            "ds = tokenize_records([{'messages': [{'role': 'user', 'content': 'hi'}, {'role': 'assistant', "
            "'content': 'ok'}]}], tok, max_length=20); print(int((ds.labels != -100).sum()))")
    out = subprocess.run([sys.executable, "-c", code, str(tiny_model_dir)], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip().splitlines()[-1] == "3"


def test_data_config_kinds_formats_and_field_names(tmp_path: Path) -> None:
    from provenance.dataset import Fields
    from provenance.errors import ConfigError
    from training.config import TrainConfig, load_config

    good = tmp_path / "good.toml"
    good.write_text('[data]\nformat = "parquet"\nkind = "chat"\nmessages_field = "conversation"\n')
    cfg = load_config(good)
    assert cfg.data.fields() == Fields(messages="conversation")
    # the committed settings give the same field names back (what resume and replay read)
    assert Fields.from_settings(cfg.committed_json()["data"]) == Fields(messages="conversation")
    assert TrainConfig().data.fields() == Fields() and Fields.from_settings({}) == Fields()
    for text, field in [('[data]\nkind = "poem"\n', "data.kind"), ('[data]\nprompt_field = ""\n', "data.prompt_field"),
                        ('[data]\nformat = "csv"\n', "data.format")]:
        bad = tmp_path / "bad.toml"
        bad.write_text(text)
        with pytest.raises(ConfigError, match=field) as info:
            load_config(bad)
        assert str(bad) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(FormatError, match="non-empty strings"):
        Fields.from_settings({"text_field": 3})
