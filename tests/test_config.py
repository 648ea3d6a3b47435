"""The configuration: defaults are written once (the pydantic schema); conf/default.yaml,
the commented listing users copy from, must say exactly the same."""

from __future__ import annotations

import yaml

from chromaflow.conf import DEFAULT_CONFIG, Config, load_config


def test_default_yaml_lists_exactly_the_schema_defaults():
    listed = yaml.safe_load(DEFAULT_CONFIG.read_text(encoding="utf-8"))
    assert listed == Config().model_dump(mode="json")


def test_presets_ship_with_the_package_and_validate():
    for preset in sorted(DEFAULT_CONFIG.parent.glob("*.yaml")):
        config = load_config(preset)
        assert isinstance(config, Config), preset


def test_a_user_file_overrides_only_what_it_names(tmp_path):
    user = tmp_path / "mine.yaml"
    user.write_text("colorize:\n  work_size: 512\n")
    config = load_config(user, ["ray.num_actors=3"])
    assert config.colorize.work_size == 512 and config.ray.num_actors == 3
    assert config.colorize.backend == Config().colorize.backend
