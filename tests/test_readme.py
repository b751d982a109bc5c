"""The README's tables match the code: every setting and every metric."""

from __future__ import annotations

import re

from pydantic import BaseModel
from starlette.testclient import TestClient

from tests.conftest import REPO, make_config
from verifier.app import create_app
from verifier.config import AppConfig
from verifier.testing import DevIssuer

README = (REPO / "README.md").read_text("utf-8")


def _settings() -> set[str]:
    names = set()
    for section, field in AppConfig.model_fields.items():
        model = field.annotation
        assert isinstance(model, type)
        assert issubclass(model, BaseModel)
        for key in model.model_fields:
            names.add(f"APP_CONFIG_{section.upper()}__{key.upper()}")
    return names


def test_readme_config_table_lists_every_setting_and_no_other() -> None:
    documented = set(re.findall(r"^\| `(APP_CONFIG_\w+)` \|", README, re.MULTILINE))

    assert documented == _settings()


def test_readme_metrics_table_names_every_metric_the_app_exposes(issuer: DevIssuer) -> None:
    with TestClient(create_app(make_config(issuer))) as client:
        exposed = set(re.findall(r"^# TYPE (jwtedge_\w+)", client.get("/metrics").text, re.M))
    documented = set(re.findall(r"`(jwtedge_\w+)`", README))

    assert exposed
    # Counters are exposed as NAME_total; the README names them that way too.
    assert exposed <= documented, exposed - documented


def test_readme_has_no_unfilled_placeholder() -> None:
    assert not re.search(r"\b[A-Z]+_SECTION\b|\bTODO\b|\bTBD\b", README)
