"""The training configuration: typed, validated at load, overridable field by field, recorded in the run manifest.

A config file is TOML (`.toml`) or YAML (`.yaml`/`.yml`) with the sections below; every field is optional and
defaults to the value shown in `training/data/default.toml`. Unknown sections or fields, wrong types and out-of-range
values are a `ConfigError` naming the field (`dp.noise_multiplier: must be > 0, got -1`). CLI options override
fields through dotted names (`with_overrides(cfg, {"training.steps": 5})`); `cli_overrides` maps `prov train`'s
options to those names (the CLI only parses).

Local paths (`model.path`, `data.path`, `out`) and anchoring settings are *not* part of the training commitment:
`committed_json()` leaves them out; the base-model digest and dataset root identify what the paths pointed to.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provenance.batches import MAX_WORLD_SIZE
from provenance.dataset import FORMATS, KINDS, Fields
from provenance.errors import ConfigError, UsageError
from provenance.fsutil import read_input
from provenance.schedule import SCHEDULE_FORMATS, SCHEDULE_V2

DEFAULT_CONFIG_FILE = Path(__file__).resolve().parent / "data" / "default.toml"  # what `prov init` writes
ACCOUNTANTS = ("prv", "rdp")
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("constant", "linear", "cosine")
DATA_FORMATS = FORMATS
DEVICES = ("cpu", "cuda")
DTYPES = ("float32", "bfloat16")
PROFILES = ("portable", "native")


@dataclass(frozen=True)
class ModelConfig:
    path: str | None = None  # None: the tiny demo model at <state_dir>/models/tiny
    dtype: str = "float32"  # float32 | bfloat16 (base weights bf16 + autocast; adapter and optimizer state fp32)
    attn_implementation: str = "eager"
    device: str = "cpu"  # cpu | cuda (deterministic algorithms on; recorded with the GPU and driver)


@dataclass(frozen=True)
class DataConfig:
    """Where the data is and how its records are read (provenance.dataset): the file format, the kind of record
    (`auto`: detected from the records) and the field names holding each canonical field."""

    path: str | None = None  # None: the demo dataset shipped in training/data/demo.jsonl
    format: str = "auto"  # auto | jsonl | text | parquet
    kind: str = "auto"  # auto | text | prompt_completion | chat
    text_field: str = "text"
    prompt_field: str = "prompt"
    completion_field: str = "completion"
    messages_field: str = "messages"
    max_length: int = 32

    def __post_init__(self) -> None:
        if self.kind not in ("auto", *KINDS):
            raise ConfigError(f"data.kind: must be one of auto, {', '.join(KINDS)}, got {self.kind!r}")
        for name in ("text_field", "prompt_field", "completion_field", "messages_field"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ConfigError(f"data.{name}: must be a non-empty string")

    def fields(self) -> Fields:
        """The field names as `provenance.dataset.load_records` takes them."""
        return Fields(text=self.text_field, prompt=self.prompt_field, completion=self.completion_field,
                      messages=self.messages_field)


@dataclass(frozen=True)
class LoraSettings:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")


@dataclass(frozen=True)
class DPConfig:
    enabled: bool = True
    noise_multiplier: float | None = None  # None and no target_epsilon: 1.0
    target_epsilon: float | None = None
    epsilon_budget: float | None = None  # refuse to start if the planned run would spend more
    max_grad_norm: float = 1.0
    delta: float | None = None  # None: 1 / N**1.1 (N = dataset size)
    accountant: str = "prv"


@dataclass(frozen=True)
class OptimizerConfig:
    name: str = "adamw"
    lr: float = 0.001
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    momentum: float = 0.0


@dataclass(frozen=True)
class ScheduleConfig:
    name: str = "constant"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    format: str = SCHEDULE_V2  # how step t maps to an lr (provenance.schedule); manifests without it are v1


@dataclass(frozen=True)
class TrainingSettings:
    steps: int = 20
    batch_size: int = 8  # expected Poisson batch size: sample rate q = batch_size / N
    sample_rate: float | None = None  # overrides batch_size when given
    checkpoint_every: int = 10
    seed: int = 0  # LoRA initialisation
    threads: int | None = None  # None: torch's default on this machine (recorded either way); per process
    physical_batch_size: int = 0  # micro-batch size; 0 = each rank's whole shard of the logical batch at once
    world_size: int = 1  # data-parallel processes (`prov train --nproc N` sets it); shards of each logical batch


@dataclass(frozen=True)
class DeterminismConfig:
    profile: str = "portable"  # portable: a CPU capability most auditors have (x86-64: AVX2); native: this CPU's


@dataclass(frozen=True)
class AnchorConfig:
    enabled: bool = True
    chain: str | None = None  # "tester", an RPC URL, or None = the project config
    store: str | None = None  # "local", "kubo:<addr>", or None = the project config
    # seconds to wait before step 0 for the registration to be final: the run's sampling and noise keys derive from
    # its block (prov.keys.v1). A dev chain answers at the receipt; a public chain's finality takes minutes
    # (Ethereum's finalized tag ~13 min), so the default waits up to 30 min rather than stop the run.
    register_timeout: float = 1800.0
    flush_timeout: float = 30.0
    finalize: bool = True  # when all steps are done: commit the merged weights' digest and close the run on chain


@dataclass(frozen=True)
class AuditConfig:
    # canary records for the one-run empirical DP audit (`prov audit-dp`); 0: none, and nothing about the run changes
    canaries: int = 0


@dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    dp: DPConfig = field(default_factory=DPConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    training: TrainingSettings = field(default_factory=TrainingSettings)
    determinism: DeterminismConfig = field(default_factory=DeterminismConfig)
    anchor: AnchorConfig = field(default_factory=AnchorConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    out: str | None = None

    def committed_json(self) -> dict[str, Any]:
        """The settings that change what training computes, as canonical-JSON-safe values (floats as repr)."""
        return {
            "lora": _jsonable(dataclasses.asdict(self.lora)),
            "optimizer": _jsonable(dataclasses.asdict(self.optimizer)),
            "schedule": _jsonable(dataclasses.asdict(self.schedule)),
            "determinism": _jsonable(dataclasses.asdict(self.determinism)),
            "data": _jsonable({k: v for k, v in dataclasses.asdict(self.data).items() if k != "path"}),
            "model": _jsonable({k: v for k, v in dataclasses.asdict(self.model).items() if k != "path"}),
        }

    def to_json(self) -> dict[str, Any]:
        """Every field (including local paths), canonical-JSON-safe: what `prov train` echoes and resume reads."""
        return _jsonable(dataclasses.asdict(self))


def _jsonable(value: Any) -> Any:
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


# --- parsing ---------------------------------------------------------------------------------------------


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check `value` against a field annotation; ints are accepted for floats, float strings for floats."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        inner = [o for o in options if o is not type(None)]
        return _coerce(value, inner[0], where)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: must be true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: must be an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: must be a number, got {value!r}")
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):  # values read back from a manifest are repr strings
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: must be a number, got {value!r}")
    if annotation is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: must be a string, got {value!r}")
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise ConfigError(f"{where}: must be a list of strings, got {value!r}")
    raise ConfigError(f"{where}: unsupported field type")  # pragma: no cover


def _build(cls: type[Any], data: Mapping[str, Any], prefix: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix or 'config'}: must be a table/mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise ConfigError(f"{where}: unknown field (known: {', '.join(sorted(names))})")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        where = f"{prefix}.{name}" if prefix else name
        annotation = hints[name]
        if dataclasses.is_dataclass(annotation):
            kwargs[name] = _build(annotation, value, where)  # type: ignore[arg-type]
        else:
            kwargs[name] = _coerce(value, annotation, where)
    return cls(**kwargs)


def _positive(value: float | int | None, where: str, *, allow_zero: bool = False) -> None:
    if value is None:
        return
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{where}: must be {'>= 0' if allow_zero else '> 0'}, got {value}")


def _choice(value: str, options: tuple[str, ...], where: str) -> None:
    if value not in options:
        raise ConfigError(f"{where}: must be one of {', '.join(options)}, got {value!r}")


def validate(cfg: TrainConfig) -> TrainConfig:
    """Range and consistency checks that single-field types cannot express."""
    _choice(cfg.model.dtype, DTYPES, "model.dtype")
    _choice(cfg.model.device, DEVICES, "model.device")
    _choice(cfg.model.attn_implementation, ("eager",), "model.attn_implementation")
    _choice(cfg.data.format, DATA_FORMATS, "data.format")
    if cfg.data.max_length < 2:
        raise ConfigError(f"data.max_length: must be >= 2, got {cfg.data.max_length}")
    _positive(cfg.lora.r, "lora.r")
    _positive(cfg.lora.alpha, "lora.alpha")
    if not 0.0 <= cfg.lora.dropout < 1.0:
        raise ConfigError(f"lora.dropout: must be in [0, 1), got {cfg.lora.dropout}")
    if not cfg.lora.target_modules:
        raise ConfigError("lora.target_modules: must name at least one module")
    if cfg.dp.noise_multiplier is not None and cfg.dp.target_epsilon is not None:
        raise ConfigError("dp.noise_multiplier and dp.target_epsilon: give one, not both")
    _positive(cfg.dp.noise_multiplier, "dp.noise_multiplier")
    _positive(cfg.dp.target_epsilon, "dp.target_epsilon")
    _positive(cfg.dp.epsilon_budget, "dp.epsilon_budget")
    _positive(cfg.dp.max_grad_norm, "dp.max_grad_norm")
    if cfg.dp.delta is not None and not 0.0 < cfg.dp.delta < 1.0:
        raise ConfigError(f"dp.delta: must be in (0, 1), got {cfg.dp.delta}")
    _choice(cfg.dp.accountant, ACCOUNTANTS, "dp.accountant")
    _choice(cfg.optimizer.name, OPTIMIZERS, "optimizer.name")
    _positive(cfg.optimizer.lr, "optimizer.lr")
    _positive(cfg.optimizer.weight_decay, "optimizer.weight_decay", allow_zero=True)
    _positive(cfg.optimizer.eps, "optimizer.eps")
    for name in ("beta1", "beta2", "momentum"):
        value = getattr(cfg.optimizer, name)
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"optimizer.{name}: must be in [0, 1), got {value}")
    _choice(cfg.schedule.name, SCHEDULES, "schedule.name")
    _choice(cfg.schedule.format, SCHEDULE_FORMATS, "schedule.format")
    _positive(cfg.schedule.warmup_steps, "schedule.warmup_steps", allow_zero=True)
    if not 0.0 <= cfg.schedule.min_lr_ratio <= 1.0:
        raise ConfigError(f"schedule.min_lr_ratio: must be in [0, 1], got {cfg.schedule.min_lr_ratio}")
    _positive(cfg.training.steps, "training.steps")
    _positive(cfg.training.batch_size, "training.batch_size")
    if cfg.training.sample_rate is not None and not 0.0 < cfg.training.sample_rate <= 1.0:
        raise ConfigError(f"training.sample_rate: must be in (0, 1], got {cfg.training.sample_rate}")
    _positive(cfg.training.checkpoint_every, "training.checkpoint_every")
    _positive(cfg.training.seed, "training.seed", allow_zero=True)
    _positive(cfg.training.threads, "training.threads")
    _positive(cfg.training.physical_batch_size, "training.physical_batch_size", allow_zero=True)
    _positive(cfg.training.world_size, "training.world_size")
    if cfg.training.world_size > MAX_WORLD_SIZE:
        raise ConfigError(f"training.world_size: at most {MAX_WORLD_SIZE} processes, got {cfg.training.world_size}")
    _choice(cfg.determinism.profile, PROFILES, "determinism.profile")
    _positive(cfg.anchor.register_timeout, "anchor.register_timeout", allow_zero=True)
    _positive(cfg.anchor.flush_timeout, "anchor.flush_timeout", allow_zero=True)
    _positive(cfg.audit.canaries, "audit.canaries", allow_zero=True)
    return cfg


def from_mapping(data: Mapping[str, Any]) -> TrainConfig:
    """Build and validate a config from parsed TOML/YAML/JSON."""
    result: TrainConfig = _build(TrainConfig, data, "")
    return validate(result)


def load_config(path: str | Path | None) -> TrainConfig:
    """Read a TOML or YAML config file (None: all defaults). Errors name the file and the field."""
    if path is None:
        return validate(TrainConfig())
    p = Path(path)
    raw = read_input(p, missing="config file not found", unreadable="cannot read config", error=ConfigError)
    suffix = p.suffix.lower()
    try:
        if suffix == ".toml":
            data: Any = tomllib.loads(raw.decode("utf-8"))
        elif suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(raw.decode("utf-8")) or {}
        else:
            raise ConfigError(f"{p}: config must be .toml, .yaml or .yml")
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: malformed config: {exc}") from None
    except Exception as exc:  # yaml.YAMLError without importing yaml at module level
        if type(exc).__module__.startswith("yaml"):
            raise ConfigError(f"{p}: malformed YAML: {' '.join(str(exc).split())}") from None
        raise
    try:
        return from_mapping(data)
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None


def with_overrides(cfg: TrainConfig, overrides: Mapping[str, Any]) -> TrainConfig:
    """Apply dotted-name overrides (`{"dp.noise_multiplier": 2.0}`), skipping None values, and re-validate.

    Setting one of `dp.noise_multiplier` / `dp.target_epsilon` clears the other, so a CLI flag can replace
    whichever the file chose.
    """
    data = dataclasses.asdict(cfg)
    for dotted, value in overrides.items():
        if value is None:
            continue
        parts = dotted.split(".")
        node = data
        for part in parts[:-1]:
            if part not in node or not isinstance(node[part], dict):
                raise ConfigError(f"{dotted}: unknown field")
            node = node[part]
        if parts[-1] not in node:
            raise ConfigError(f"{dotted}: unknown field")
        node[parts[-1]] = value
        if dotted == "dp.noise_multiplier":
            data["dp"]["target_epsilon"] = None
        elif dotted == "dp.target_epsilon":
            data["dp"]["noise_multiplier"] = None
    return from_mapping(data)


# `prov train` option name -> the dotted config field it overrides.
CLI_FIELDS = {
    "model": "model.path",
    "data": "data.path",
    "out": "out",
    "steps": "training.steps",
    "checkpoint_every": "training.checkpoint_every",
    "batch_size": "training.batch_size",
    "physical_batch_size": "training.physical_batch_size",
    "nproc": "training.world_size",
    "max_length": "data.max_length",
    "noise_multiplier": "dp.noise_multiplier",
    "target_epsilon": "dp.target_epsilon",
    "delta": "dp.delta",
    "max_grad_norm": "dp.max_grad_norm",
    "accountant": "dp.accountant",
    "lr": "optimizer.lr",
    "lora_r": "lora.r",
    "threads": "training.threads",
    "seed": "training.seed",
    "profile": "determinism.profile",
    "chain": "anchor.chain",
    "store": "anchor.store",
    "canaries": "audit.canaries",
}
PATH_FIELDS = ("model.path", "data.path", "out")


def cli_overrides(options: Mapping[str, Any], *, non_private: bool = False, no_anchor: bool = False) -> dict[str, Any]:
    """The dotted overrides `prov train`'s options stand for (None = not given); refuses contradictory options."""
    if options.get("noise_multiplier") is not None and options.get("target_epsilon") is not None:
        raise UsageError("give --noise-multiplier or --target-epsilon, not both")
    if options.get("canaries") is not None and options["canaries"] < 0:
        raise UsageError(f"--canaries: must be >= 0 (0 = no canaries), got {options['canaries']}")
    unknown = sorted(set(options) - set(CLI_FIELDS))
    if unknown:
        raise UsageError(f"unknown training option {unknown[0]!r}")
    overrides: dict[str, Any] = {dotted: options.get(name) for name, dotted in CLI_FIELDS.items()}
    for key in PATH_FIELDS:
        if overrides.get(key) is not None:
            overrides[key] = str(overrides[key])
    if non_private:
        overrides["dp.enabled"] = False
    if no_anchor:
        overrides["anchor.enabled"] = False
    return overrides
