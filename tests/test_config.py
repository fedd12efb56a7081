"""Configuration: validation errors name the field path; --set overrides by dotted path."""

from __future__ import annotations

import pytest

from lepton import ConfigError, config_from_dict, load_config
from lepton.config import apply_overrides

from .conftest import ROOT


def test_example_config_is_valid() -> None:
    cfg = load_config(ROOT / "examples" / "penguins.yaml")
    assert cfg.model.architecture == "shared_bottom"
    assert cfg.balancer.name == "uw"
    assert [t.name for t in cfg.build_tasks()] == ["species", "sex", "body_mass_g"]


def test_defaults(tiny_config: dict) -> None:
    cfg = config_from_dict({"data": {"dataset": "penguins"}, "tasks": {"sex": {"kind": "binary"}}})
    assert cfg.model.architecture == "shared_bottom"
    assert cfg.balancer.name == "ew"
    assert cfg.optim.name == "adam"


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"train": {"epochs": "ten"}}, r"train\.epochs: .*integer.*'ten'"),
        ({"train": {"epoch": 3}}, r"train\.epoch: unknown field"),
        ({"optim": {"lr": -1}}, r"optim\.lr: .*greater than 0"),
        ({"unknown_section": {}}, r"unknown_section: unknown field"),
        ({"tasks": {"sex": {"kind": "binry"}}}, r"tasks\.sex\.kind"),
        ({"tasks": {"sex": {"kind": "binary", "colour": 1}}}, r"tasks\.sex\.colour: unknown field"),
        ({"data": {"dataset": "penguins", "path": "x.csv"}}, r"data: .*exactly one data source"),
        ({"data": {"dataset": "penguins", "split": {"val": 0.6, "test": 0.5}}}, r"data\.split"),
        ({"optim": {"scheduler": {"name": "linear"}}}, r"optim\.scheduler\.name"),
        (
            {"optim": {"scheduler": {"name": "plateau", "warmup_epochs": 2}}},
            r"optim\.scheduler: .*warmup_epochs is not available with the plateau",
        ),
    ],
)
def test_errors_name_the_field_path(tiny_config: dict, patch: dict, message: str) -> None:
    raw = {**tiny_config, **patch}
    with pytest.raises(ConfigError, match=message):
        config_from_dict(raw)


def test_task_level_errors_name_the_task(tiny_config: dict) -> None:
    tiny_config["tasks"]["sex"]["loss"] = "mse"
    with pytest.raises(ConfigError, match=r"tasks\.sex: .*loss 'mse'"):
        config_from_dict(tiny_config)


def test_fusion_must_name_known_ordinary_tasks(tiny_config: dict) -> None:
    tiny_config["tasks"]["all"] = {
        "kind": "regression",
        "target": "body_mass_g",
        "fusion": ["nope"],
    }
    with pytest.raises(ConfigError, match=r"tasks\.all\.fusion: unknown task 'nope'"):
        config_from_dict(tiny_config)
    tiny_config["tasks"]["all"]["fusion"] = ["species"]
    tiny_config["tasks"]["second"] = {
        "kind": "regression",
        "target": "body_mass_g",
        "fusion": ["all"],
    }
    with pytest.raises(ConfigError, match="itself a fusion task"):
        config_from_dict(tiny_config)


def test_overrides_by_dotted_path(tiny_config: dict) -> None:
    raw = apply_overrides(
        tiny_config,
        [
            "balancer.name=uw",
            "train.epochs=7",
            "model.hidden=[32, 16]",
            "tasks.sex.weight=2.5",
            "optim.scheduler.name=cosine",
            "data.augment.noise_std=0.1",
        ],
    )
    cfg = config_from_dict(raw)
    assert cfg.balancer.name == "uw"
    assert cfg.train.epochs == 7
    assert cfg.model.hidden == [32, 16]
    assert cfg.tasks["sex"].weight == 2.5
    assert cfg.optim.scheduler.name == "cosine"
    assert cfg.data.augment.noise_std == 0.1
    assert tiny_config["train"]["epochs"] == 3  # the original is untouched


def test_override_of_unknown_field_is_an_error(tiny_config: dict) -> None:
    with pytest.raises(ConfigError, match=r"train\.epocs: unknown field"):
        config_from_dict(apply_overrides(tiny_config, ["train.epocs=3"]))
    with pytest.raises(ConfigError, match="expected key=value"):
        apply_overrides(tiny_config, ["train.epochs"])
    with pytest.raises(ConfigError, match="not a section"):
        apply_overrides(tiny_config, ["train.epochs.x=1"])


def test_config_file_errors_name_the_file(tmp_path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML \(line"):
        load_config(bad)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ConfigError, match="empty"):
        load_config(empty)


def test_resolved_config_round_trips(tiny_config: dict) -> None:
    cfg = config_from_dict(tiny_config)
    assert config_from_dict(cfg.to_dict()) == cfg


def test_configuration_reference_is_up_to_date() -> None:
    from lepton._docgen import reference_markdown

    page = (ROOT / "docs" / "configuration.md").read_text()
    assert page == reference_markdown(), "run `make docs` to regenerate docs/configuration.md"
