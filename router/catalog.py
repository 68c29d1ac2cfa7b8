"""The shipped seed config (the source article's catalog and template)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml

from router.config import RouterConfig, config_from_dict


def seed_config_path() -> Path:
    """Path of the shipped seed config YAML (package data)."""
    return Path(str(resources.files("router") / "data" / "seed_config.yaml"))


def load_seed_config() -> RouterConfig:
    """The seed config: 13 models from the article, its three template routes plus
    ``json_parse``, ``error_handling`` and ``default``."""
    path = seed_config_path()
    return config_from_dict(yaml.safe_load(path.read_text(encoding="utf-8")), str(path))
