"""A LoRA adapter merged into its base model, deterministically and without torch (`prov.merge.v1`), and the tensor
digest of the result, computed by streaming.

Recipe `prov.merge.v1` (docs/formats.md, "Merged model"). For every LoRA target with base weight W (out × in), adapter
matrices A (r × in) and B (out × r) and scale s = lora_alpha / r (float64):

    acc = 0 (float64, out × in);  for k = 0 .. r-1, in order:  acc += B[:, k:k+1] * A[k:k+1, :]
    W'  = round(float64(W) + acc * s)  to W's dtype, once

B @ A is never handed to BLAS, whose summation order depends on the CPU: numpy's elementwise float64 operations are
IEEE-exact, so every machine computes the same bits. Rounding is to nearest, ties to even: float64 and float32 by
numpy's cast, float16 and bfloat16 by `round_to_dtype` (float64 arithmetic on exact powers of two). Rows are merged
in blocks, so memory stays bounded by one block whatever the model's size. Tensors no adapter matrix targets are
copied unchanged. The PEFT name `base_model.model.<path>.lora_A.weight` (and `lora_B`) targets `<path>.weight`.

Only plain LoRA is merged: DoRA, rsLoRA, per-module rank or alpha patterns, LoRA biases, `modules_to_save`, embedding
or conv LoRA, fan-in-fan-out layers and initialisations that rewrite the base weights (PiSSA, OLoRA, LoftQ, ...)
are refused with a one-line `AdapterError` naming the setting.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from provenance import canonical, mergedir
from provenance.basemodel import check_model_dir, model_file_names
from provenance.canonical import short_repr
from provenance.errors import FormatError, UsageError
from provenance.hashing import Digest
from provenance.records import encode_safetensors
from provenance.safetensors import READ_BLOCK, Header, TensorInfo, canonical_header, header_of

MERGE_FORMAT = "prov.merge.v1"
ADAPTER_FILE = "adapter_model.safetensors"
ADAPTER_CONFIG_FILE = "adapter_config.json"
INDEX_FILE = "model.safetensors.index.json"
# encode_safetensors builds a file in memory: writing holds about three times one shard (measured: docs/formats.md)
DEFAULT_SHARD_BYTES = 512 << 20
BLOCK_ELEMENTS = 1 << 20  # float64 elements merged at once (8 MiB per temporary)
FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")
ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2}
_PEFT_NAME = re.compile(r"base_model\.model\.(?P<path>.+)\.lora_(?P<side>[AB])\.weight")
# (mantissa bits, exponent of the smallest normal, largest finite value) of the half-precision formats
_HALF = {"F16": (10, -14, 65504.0), "BF16": (7, -126, float.fromhex("0x1.fep127"))}
# Adapter settings that do not change what merging computes: which modules are targets is read from the tensors,
# dropout and inference flags do not touch weights. Not inert, although they name no weight: layers_to_transform,
# layers_pattern and exclude_modules make PEFT skip targets (dropping their trained tensors without an error) and
# revision picks another base-model revision: set, they are refused below like any unknown setting.
_INERT = frozenset({"auto_mapping", "base_model_name_or_path", "ensure_weight_tying", "inference_mode",
                    "lora_alpha", "lora_dropout", "megatron_core", "peft_type", "peft_version", "qalora_group_size",
                    "r", "target_modules", "task_type"})
_REFUSED = {"use_dora": "DoRA rescales each weight column", "use_rslora": "rsLoRA scales by alpha / sqrt(r)",
            "rank_pattern": "per-module ranks", "alpha_pattern": "per-module alphas",
            "lora_bias": "LoRA biases", "modules_to_save": "fully trained module copies",
            "fan_in_fan_out": "transposed (Conv1D) weights", "loftq_config": "LoftQ rewrites the base weights",
            "layers_to_transform": "PEFT adapts only these layers and drops the other layers' trained tensors",
            "layers_pattern": "PEFT matches layers by this pattern and may drop trained tensors",
            "exclude_modules": "PEFT skips these targets and drops their trained tensors",
            "revision": "AutoPeftModelForCausalLM loads this revision of the base model"}


class AdapterError(UsageError):
    """The adapter cannot be merged by `prov.merge.v1` into this base model (a setting it does not support, a tensor
    that is not a LoRA matrix, a target the base model lacks, inconsistent shapes)."""


@dataclass(frozen=True)
class LoraRecipe:
    """The numbers the merge needs from adapter_config.json."""

    r: int
    alpha: float
    scale: float  # alpha / r in float64, as PEFT computes `scaling`


def read_adapter_config(source: str | os.PathLike[str] | Mapping[str, Any]) -> LoraRecipe:
    """Parse an adapter config (a path or its parsed JSON), refusing every setting `prov.merge.v1` does not merge."""
    if isinstance(source, Mapping):
        doc: Any = dict(source)
    else:
        try:
            doc = canonical.load_json(Path(source).read_bytes(), source=f"{source} (adapter config)")
        except OSError as exc:
            raise AdapterError(f"{source}: unreadable adapter config ({exc.strerror or exc})") from None
        except FormatError as exc:
            raise AdapterError(str(exc)) from None
    if not isinstance(doc, dict):
        raise AdapterError("adapter config: not a JSON object")
    if doc.get("peft_type", "LORA") != "LORA":
        raise AdapterError(f"adapter config: peft_type {doc.get('peft_type')!r} is not LORA; only LoRA is merged")
    if doc.get("bias", "none") != "none":
        raise AdapterError(f"adapter config: bias = {doc.get('bias')!r}: trained biases are not merged by "
                           f"{MERGE_FORMAT} (only bias = 'none')")
    init = doc.get("init_lora_weights", True)
    if init not in (True, False, "gaussian"):
        raise AdapterError(f"adapter config: init_lora_weights = {init!r} rewrites the base weights; "
                           f"{MERGE_FORMAT} merges into the unchanged base model only")
    for key, value in sorted(doc.items()):
        if key in _INERT or key in ("bias", "init_lora_weights") or value in (None, False, {}, [], ""):
            continue
        why = _REFUSED.get(key, "a setting this recipe does not define")
        raise AdapterError(f"adapter config: {key} = {short_repr(value)} ({why}) is not supported by {MERGE_FORMAT}, "
                           "which merges plain LoRA only")
    r, alpha = doc.get("r"), doc.get("lora_alpha")
    if not isinstance(r, int) or isinstance(r, bool) or r <= 0:
        raise AdapterError(f"adapter config: r must be a positive integer, got {short_repr(r)}")
    if not isinstance(alpha, int | float) or isinstance(alpha, bool) or not np.isfinite(alpha) or alpha <= 0:
        raise AdapterError(f"adapter config: lora_alpha must be a positive number, got {short_repr(alpha)}")
    return LoraRecipe(r, float(alpha), float(alpha) / float(r))


def is_adapter_header(header: Header) -> bool:
    """True when a safetensors file's tensors are named as a PEFT adapter's (not as a model's)."""
    return any(t.name.startswith("base_model.model.") or ".lora_" in t.name for t in header.tensors)


# --- numbers ------------------------------------------------------------------------------------------------------

def to_float64(raw: bytes, dtype: str) -> np.ndarray:
    """Little-endian tensor bytes of a float dtype as float64 (exact: every value of these formats is a float64)."""
    if dtype == "BF16":
        return (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    if dtype not in ITEMSIZE:
        raise FormatError(f"dtype {dtype} is not a floating-point format prov can merge")
    return np.frombuffer(raw, dtype={"F64": "<f8", "F32": "<f4", "F16": "<f2"}[dtype]).astype(np.float64)


def round_to_dtype(values: np.ndarray, dtype: str) -> bytes:
    """float64 values rounded once, to nearest with ties to even, to `dtype`; little-endian bytes. Overflow gives
    ±inf, NaN stays NaN."""
    x = np.asarray(values, dtype=np.float64)
    if dtype == "F64":
        return x.astype("<f8").tobytes()
    if dtype == "F32":
        with np.errstate(over="ignore"):  # overflow to ±inf is the rounding's answer, not an error
            return x.astype("<f4").tobytes()
    if dtype not in _HALF:
        raise FormatError(f"dtype {dtype} is not a floating-point format prov can merge")
    mantissa, min_exp, largest = _HALF[dtype]
    with np.errstate(invalid="ignore", over="ignore"):
        _, exp = np.frexp(x)  # |x| = m · 2^exp with 0.5 <= m < 1, so the leading bit's exponent is exp - 1
        quantum = np.ldexp(1.0, np.maximum(exp - 1, min_exp) - mantissa)  # the spacing of the format at x
        rounded = np.rint(x / quantum) * quantum  # exact divisions by powers of two; np.rint ties to even
        rounded = np.where(np.abs(rounded) > largest, np.copysign(np.inf, x), rounded)
        rounded = np.where(np.isfinite(x), rounded, x)
    if dtype == "F16":
        return rounded.astype("<f2").tobytes()  # exact: every value is already a float16
    bits = rounded.astype(np.float32).view(np.uint32) >> 16  # exact: a bfloat16 is a float32's upper half
    return bits.astype("<u2").tobytes()


# --- the merge ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Target:
    a: TensorInfo
    b: TensorInfo


@dataclass
class Merge:
    """An open merge: the merged model's tensors (name, dtype, shape; sorted by name) and their bytes on demand.
    Open with `open_merge`; nothing is held in memory beyond one block of rows."""

    tensors: list[TensorInfo]
    recipe: LoraRecipe
    adapter_metadata: dict[str, str]
    _base: dict[str, tuple[BinaryIO, Header, TensorInfo]] = field(repr=False)
    _adapter: tuple[BinaryIO, Header] = field(repr=False)
    _targets: dict[str, _Target] = field(repr=False)

    @property
    def targets(self) -> list[str]:
        return sorted(self._targets)

    def chunks(self, name: str) -> Iterator[bytes]:
        """The merged tensor's bytes (its base dtype, C order) in pieces: blocks of rows for a target, else the
        base tensor's bytes as stored."""
        stream, header, info = self._base[name]
        start = header.data_start + info.begin
        target = self._targets.get(name)
        if target is None:
            for offset in range(0, info.nbytes, READ_BLOCK):
                yield _read(stream, start + offset, min(READ_BLOCK, info.nbytes - offset), info.name)
            return
        a, b = self._matrix(target.a), self._matrix(target.b)
        rows, cols = info.shape
        row_bytes = cols * ITEMSIZE[info.dtype]
        block = max(1, BLOCK_ELEMENTS // max(cols, 1))
        for first in range(0, rows, block):
            last = min(rows, first + block)
            weight = to_float64(_read(stream, start + first * row_bytes, (last - first) * row_bytes, info.name),
                                info.dtype).reshape(last - first, cols)
            acc = np.zeros((last - first, cols), dtype=np.float64)
            for k in range(self.recipe.r):
                acc += b[first:last, k:k + 1] * a[k:k + 1, :]
            yield round_to_dtype(weight + acc * self.recipe.scale, info.dtype)

    def digest(self) -> Digest:
        """The `prov.tensors.v1` digest of the merged model, computed by streaming."""
        hasher = hashlib.sha256(canonical_header(self.tensors))
        for info in self.tensors:
            for piece in self.chunks(info.name):
                hasher.update(piece)
        return Digest(hasher.digest())

    def _matrix(self, info: TensorInfo) -> np.ndarray:
        stream, header = self._adapter
        raw = _read(stream, header.data_start + info.begin, info.nbytes, info.name)
        return to_float64(raw, info.dtype).reshape(info.shape)


@contextlib.contextmanager
def open_merge(base_model_dir: str | os.PathLike[str], adapter_file: str | os.PathLike[str],
               adapter_config: str | os.PathLike[str] | Mapping[str, Any]) -> Iterator[Merge]:
    """Open the base model's safetensors files and the adapter, check that the adapter merges into this base model,
    and yield the `Merge`."""
    recipe = read_adapter_config(adapter_config)
    root = check_model_dir(base_model_dir)
    with contextlib.ExitStack() as stack:
        base: dict[str, tuple[BinaryIO, Header, TensorInfo]] = {}
        for name in model_file_names(root):
            if not name.endswith(".safetensors"):
                continue
            stream, header = _open(stack, root / name)
            for info in header.tensors:
                if info.name in base:
                    raise FormatError(f"{root}: tensor {info.name!r} is in two of its safetensors files")
                base[info.name] = (stream, header, info)
        adapter = _open(stack, Path(adapter_file))
        targets = _targets(adapter[1], base, recipe, source=str(adapter_file))
        tensors = [info for _, _, info in sorted(base.values(), key=lambda entry: entry[2].name)]
        yield Merge(tensors, recipe, dict(adapter[1].metadata), base, adapter, targets)


def _targets(adapter: Header, base: Mapping[str, tuple[BinaryIO, Header, TensorInfo]], recipe: LoraRecipe, *,
             source: str) -> dict[str, _Target]:
    sides: dict[str, dict[str, TensorInfo]] = {}
    for info in adapter.tensors:
        match = _PEFT_NAME.fullmatch(info.name)
        if match is None:
            raise AdapterError(f"{source}: tensor {info.name!r} is not a LoRA A/B matrix ({MERGE_FORMAT} merges "
                               "plain LoRA: no embedding or conv LoRA, biases or saved modules)")
        sides.setdefault(match["path"] + ".weight", {})[match["side"]] = info
    if not sides:
        raise AdapterError(f"{source}: the adapter holds no LoRA matrices")
    targets = {}
    for name, pair in sorted(sides.items()):
        if set(pair) != {"A", "B"}:
            raise AdapterError(f"{source}: {name} has lora_{''.join(pair)} but not its other matrix")
        if name not in base:
            raise AdapterError(f"{source}: the adapter targets {name}, which the base model does not have (an "
                               "adapter for another base model?)")
        weight, a, b = base[name][2], pair["A"], pair["B"]
        if weight.dtype not in FLOAT_DTYPES or a.dtype not in FLOAT_DTYPES or b.dtype not in FLOAT_DTYPES:
            raise AdapterError(f"{source}: {name} is {weight.dtype} with LoRA matrices {a.dtype}/{b.dtype}; "
                               f"{MERGE_FORMAT} merges float64/float32/float16/bfloat16 weights only")
        if (len(weight.shape) != 2 or a.shape != (recipe.r, weight.shape[1])
                or b.shape != (weight.shape[0], recipe.r)):
            raise AdapterError(f"{source}: shapes do not fit for {name}: weight {list(weight.shape)}, lora_A "
                               f"{list(a.shape)}, lora_B {list(b.shape)} with r = {recipe.r}")
        targets[name] = _Target(a, b)
    return targets


def _open(stack: contextlib.ExitStack, path: Path) -> tuple[BinaryIO, Header]:
    try:
        stream = stack.enter_context(path.open("rb"))
    except OSError as exc:
        raise UsageError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return stream, header_of(stream, size=os.fstat(stream.fileno()).st_size, source=str(path))


def _read(stream: BinaryIO, start: int, size: int, name: str) -> bytes:
    stream.seek(start)
    data = stream.read(size)
    if len(data) != size:
        raise FormatError(f"tensor {name!r}: the file shrank while it was read")
    return data


# --- the two entry points -----------------------------------------------------------------------------------------

def adapter_paths(adapter: str | os.PathLike[str] | tuple[str | os.PathLike[str], str | os.PathLike[str]]
                  ) -> tuple[Path, Path]:
    """(adapter weights, adapter config) from a checkpoint directory or an explicit pair of files."""
    if isinstance(adapter, tuple):
        return Path(adapter[0]), Path(adapter[1])
    root = Path(adapter)
    if not root.is_dir():
        raise UsageError(f"{root}: not a checkpoint directory (it needs {ADAPTER_FILE} and {ADAPTER_CONFIG_FILE})")
    for name in (ADAPTER_FILE, ADAPTER_CONFIG_FILE):
        if not (root / name).is_file():
            raise UsageError(f"{root}: no {name}; pass a checkpoint directory of a prov run or a PEFT adapter")
    return root / ADAPTER_FILE, root / ADAPTER_CONFIG_FILE


def merged_tensor_digest(base_model_dir: str | os.PathLike[str], adapter_file: str | os.PathLike[str],
                         adapter_config: str | os.PathLike[str] | Mapping[str, Any]) -> Digest:
    """The `prov.tensors.v1` digest of the adapter merged into the base model by `prov.merge.v1` (streamed)."""
    with open_merge(base_model_dir, adapter_file, adapter_config) as merge:
        return merge.digest()


@dataclass(frozen=True)
class MergedModel:
    path: Path
    tensor_digest: Digest
    files: tuple[str, ...]  # the safetensors files written, in order
    manifest_digest: Digest | None = None  # the prov.merged-dir.v1 digest a finalisation commits (mergedir)


def write_merged(base_model_dir: str | os.PathLike[str],
                 adapter: str | os.PathLike[str] | tuple[str | os.PathLike[str], str | os.PathLike[str]],
                 out_dir: str | os.PathLike[str], *, max_shard_bytes: int = DEFAULT_SHARD_BYTES) -> MergedModel:
    """Write a loadable Hugging Face model directory: the base model's config and tokenizer files, the merged
    weights (`records.encode_safetensors`; one file, or shards of at most `max_shard_bytes` with an index) and
    `prov-merged.json` (`mergedir`: what a finalisation commits). Its tensor digest is `merged_tensor_digest(...)`,
    computed in the same pass."""
    if max_shard_bytes <= 0:
        raise UsageError(f"the shard size must be positive, got {max_shard_bytes}")
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"{out}: exists and is not an empty directory (choose another --out)")
    adapter_file, config_file = adapter_paths(adapter)
    partial = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        with open_merge(base_model_dir, adapter_file, config_file) as merge:
            # the adapter's own run id and checkpoint (untrusted: they only select among on-chain claims)
            named = {k: v for k, v in merge.adapter_metadata.items() if k in ("prov.run_id", "prov.checkpoint")}
            metadata = {"format": "pt", "prov.merge": MERGE_FORMAT, **named}
            digest, files = _write_shards(merge, partial, metadata=metadata, max_shard_bytes=max_shard_bytes)
        root = Path(base_model_dir)
        for name in model_file_names(root):
            if not name.endswith(".safetensors") and name != INDEX_FILE:
                shutil.copyfile(root / name, partial / name)
        manifest = mergedir.of_directory(partial, digest)
        mergedir.write(partial, manifest)  # names the committed files, so a verifier can say which one differs
        if out.exists():
            out.rmdir()
        partial.rename(out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return MergedModel(out, digest, files, manifest.digest())


def _write_shards(merge: Merge, directory: Path, *, metadata: dict[str, str],
                  max_shard_bytes: int) -> tuple[Digest, tuple[str, ...]]:
    shards: list[list[TensorInfo]] = [[]]
    for info in merge.tensors:
        if shards[-1] and sum(t.nbytes for t in shards[-1]) + info.nbytes > max_shard_bytes:
            shards.append([])
        shards[-1].append(info)
    names = (["model.safetensors"] if len(shards) == 1 else
             [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))])
    hasher = hashlib.sha256(canonical_header(merge.tensors))
    weight_map = {}
    for file_name, shard in zip(names, shards, strict=True):
        entries = {}
        for info in shard:
            data = b"".join(merge.chunks(info.name))
            hasher.update(data)
            entries[info.name] = (info.dtype, info.shape, data)
            weight_map[info.name] = file_name
        (directory / file_name).write_bytes(encode_safetensors(entries, metadata))
        del entries
    if len(shards) > 1:
        index = {"metadata": {"total_size": sum(t.nbytes for t in merge.tensors)}, "weight_map": weight_map}
        (directory / INDEX_FILE).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return Digest(hasher.digest()), tuple(names)


def merged_manifest(base_model_dir: str | os.PathLike[str], adapter_file: str | os.PathLike[str],
                    adapter_config: str | os.PathLike[str] | Mapping[str, Any]) -> mergedir.MergedDirManifest:
    """The `prov.merged-dir.v1` manifest of the directory `write_merged` writes (whatever its sharding): what a
    run's finalisation commits. Streams the merge once; writes nothing."""
    from provenance.basemodel import base_model_manifest

    tensors = merged_tensor_digest(base_model_dir, adapter_file, adapter_config)
    return mergedir.of_base(base_model_manifest(base_model_dir).files, tensors)
