"""configs/serve.yaml is a valid Serve config whose import path builds this hub's app."""

from __future__ import annotations

import importlib
from pathlib import Path

import yaml
from ray.serve.schema import ServeDeploySchema

ROOT = Path(__file__).resolve().parents[3]


def test_serve_yaml_is_a_valid_serve_deploy_config() -> None:
    config = yaml.safe_load((ROOT / "configs" / "serve.yaml").read_text())
    schema = ServeDeploySchema.model_validate(config)
    (app,) = schema.applications
    module_name, _, attr = app.import_path.partition(":")
    builder = getattr(importlib.import_module(module_name), attr)
    assert callable(builder)
    assert (ROOT / app.args["config"]).exists()
