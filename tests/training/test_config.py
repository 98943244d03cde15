"""Config loading: defaults, TOML/YAML, errors that name the field, CLI-style overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from provenance.errors import ConfigError
from training.config import TrainConfig, load_config, with_overrides

DEFAULT_TOML = Path(__file__).resolve().parents[2] / "training" / "data" / "default.toml"


def test_shipped_default_config_equals_the_built_in_defaults() -> None:
    assert load_config(DEFAULT_TOML) == TrainConfig()
    assert load_config(None) == TrainConfig()


def test_toml_and_yaml_give_the_same_config(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('[dp]\nnoise_multiplier = 2\n[lora]\nr = 4\ntarget_modules = ["q_proj"]\n')
    yaml = tmp_path / "c.yaml"
    yaml.write_text("dp:\n  noise_multiplier: 2\nlora:\n  r: 4\n  target_modules: [q_proj]\n")
    a, b = load_config(toml), load_config(yaml)
    assert a == b
    assert a.dp.noise_multiplier == 2.0 and a.lora.r == 4 and a.lora.target_modules == ("q_proj",)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("[lora]\nrank = 4\n", "lora.rank"),
        ("[nonsense]\nx = 1\n", "nonsense"),
        ('[training]\nsteps = "many"\n', "training.steps"),
        ("[training]\nsteps = 0\n", "training.steps"),
        ("[dp]\nnoise_multiplier = -1\n", "dp.noise_multiplier"),
        ("[dp]\nnoise_multiplier = 1\ntarget_epsilon = 3\n", "dp.noise_multiplier"),
        ('[dp]\naccountant = "gdp"\n', "dp.accountant"),
        ("[lora]\ndropout = 1.5\n", "lora.dropout"),
        ("[dp]\nenabled = 1\n", "dp.enabled"),
        ("[dp]\ndelta = 2.0\n", "dp.delta"),
        ("[training]\nworld_size = 5000\n", "training.world_size"),
    ],
)
def test_bad_config_names_the_field(tmp_path: Path, text: str, field: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert field in message and str(path) in message
    assert "\n" not in message


def test_malformed_files_are_config_errors(tmp_path: Path) -> None:
    bad_toml = tmp_path / "a.toml"
    bad_toml.write_text("[dp\nx=")
    with pytest.raises(ConfigError, match="malformed"):
        load_config(bad_toml)
    bad_yaml = tmp_path / "a.yaml"
    bad_yaml.write_text("dp: [unclosed\n")
    with pytest.raises(ConfigError, match="malformed YAML"):
        load_config(bad_yaml)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")
    other = tmp_path / "a.ini"
    other.write_text("x")
    with pytest.raises(ConfigError, match=r"\.toml, \.yaml"):
        load_config(other)


def test_overrides_replace_fields_and_the_other_noise_setting() -> None:
    cfg = with_overrides(TrainConfig(), {"dp.noise_multiplier": 3.0, "training.steps": 5, "out": None})
    assert cfg.dp.noise_multiplier == 3.0 and cfg.training.steps == 5
    cfg2 = with_overrides(cfg, {"dp.target_epsilon": 4.0})
    assert cfg2.dp.target_epsilon == 4.0 and cfg2.dp.noise_multiplier is None
    with pytest.raises(ConfigError, match=r"training\.stepz"):
        with_overrides(cfg, {"training.stepz": 1})


def test_committed_json_leaves_out_local_paths_and_has_no_floats() -> None:
    cfg = with_overrides(TrainConfig(), {"model.path": "/secret/place", "data.path": "/x.jsonl", "out": "/o"})
    doc = cfg.committed_json()
    text = repr(doc)
    assert "/secret/place" not in text and "/x.jsonl" not in text and "anchor" not in doc

    def no_floats(value: object) -> bool:
        if isinstance(value, dict):
            return all(no_floats(v) for v in value.values())
        if isinstance(value, list):
            return all(no_floats(v) for v in value)
        return not isinstance(value, float)

    assert no_floats(doc) and no_floats(cfg.to_json())
    assert doc["optimizer"]["lr"] == "0.001"


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('[model]\ndtype = "float16"\n', "model.dtype"),
        ('[model]\ndevice = "tpu"\n', "model.device"),
        ("[training]\nphysical_batch_size = -1\n", "training.physical_batch_size"),
        ("[training]\nworld_size = 0\n", "training.world_size"),
        ('[determinism]\nprofile = "fast"\n', "determinism.profile"),
    ],
)
def test_bad_precision_device_batch_and_profile_settings(tmp_path: Path, text: str, field: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_config(path)


def test_cli_overrides_map_options_to_fields() -> None:
    from provenance.errors import UsageError
    from training.config import cli_overrides

    overrides = cli_overrides({"model": Path("/m"), "nproc": 2, "physical_batch_size": 16, "profile": "native",
                               "steps": None}, non_private=True, no_anchor=True)
    cfg = with_overrides(TrainConfig(), overrides)
    assert cfg.model.path == "/m" and cfg.training.world_size == 2 and cfg.training.physical_batch_size == 16
    assert cfg.determinism.profile == "native" and not cfg.dp.enabled and not cfg.anchor.enabled
    assert cfg.training.steps == TrainConfig().training.steps  # None = not given
    with pytest.raises(UsageError, match="not both"):
        cli_overrides({"noise_multiplier": 1.0, "target_epsilon": 2.0})
    with pytest.raises(UsageError, match="unknown training option"):
        cli_overrides({"stepz": 3})


def test_resume_settings_allow_only_what_a_resume_may_change(tiny_run: object, isolated_state: Path) -> None:
    from provenance.errors import UsageError
    from training.launch import resume_settings

    run_dir = tiny_run.run_dir  # type: ignore[attr-defined]
    settings = resume_settings(run_dir, options={"steps": None, "nproc": None})
    assert settings.nproc == 1 and settings.anchor is None
    assert settings.env.get("ATEN_CPU_CAPABILITY")  # the recorded kernels, for a fresh process
    assert resume_settings(run_dir, options={"chain": "tester"}).anchor is not None
    assert resume_settings(run_dir, options={}, no_anchor=True).anchor.enabled is False  # type: ignore[union-attr]
    with pytest.raises(UsageError, match="--resume continues a run"):
        resume_settings(run_dir, options={"steps": 3})
    with pytest.raises(UsageError, match="--resume continues a run"):
        resume_settings(run_dir, options={}, extra_given=True)
    with pytest.raises(UsageError, match="world size 1"):
        resume_settings(run_dir, options={"nproc": 3})
