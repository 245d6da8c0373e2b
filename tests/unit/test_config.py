from __future__ import annotations

import pytest

import agentops_async as ao
from agentops_async._config import load_config

KEY = "11111111-2222-4333-8444-555555555555"


def test_keyword_arguments_beat_environment_beats_defaults() -> None:
    env = {"AGENTOPS_API_KEY": "env-key", "AGENTOPS_FLUSH_INTERVAL": "0.5"}
    config = load_config({"api_key": KEY}, environ=env)
    assert config.api_key == KEY
    assert config.flush_interval == 0.5
    assert config.max_batch_size == 1_000  # default
    assert load_config({}, environ=env).api_key == "env-key"


def test_none_keyword_means_not_given() -> None:
    config = load_config({"api_key": None}, environ={"AGENTOPS_API_KEY": KEY})
    assert config.api_key == KEY


def test_endpoint_trailing_slash_is_removed() -> None:
    assert load_config({"endpoint": "http://127.0.0.1:8000/"}, environ={}).endpoint == (
        "http://127.0.0.1:8000"
    )


def test_no_key_means_inactive_and_enabled_false_disables() -> None:
    assert not load_config({}, environ={}).active
    assert load_config({"api_key": KEY}, environ={}).active
    assert not load_config({"api_key": KEY}, environ={"AGENTOPS_ENABLED": "false"}).active


@pytest.mark.parametrize(
    ("overrides", "environ", "needle"),
    [
        ({"max_queue_size": 0}, {}, "max_queue_size=0 must be a number > 0"),
        ({"backpressure": "wait"}, {}, "backpressure='wait' is not valid"),
        ({"endpoint": "127.0.0.1:8000"}, {}, "AGENTOPS_API_ENDPOINT"),
        ({}, {"AGENTOPS_FLUSH_INTERVAL": "soon"}, "AGENTOPS_FLUSH_INTERVAL='soon'"),
        ({}, {"AGENTOPS_ENABLED": "maybe"}, "AGENTOPS_ENABLED"),
        ({"flush_intreval": 1}, {}, "unknown setting 'flush_intreval'"),
        ({"default_tags": [1]}, {}, "default_tags must be a list of strings"),
    ],
)
def test_bad_settings_name_the_setting_and_the_fix(
    overrides: dict[str, object], environ: dict[str, str], needle: str
) -> None:
    with pytest.raises(ao.ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        load_config(overrides, environ=environ)


def test_reprs_never_show_the_api_key() -> None:
    client = ao.AsyncClient(api_key=KEY, parent_key="parent-secret", endpoint="http://x.test")
    for text in (repr(client.config), str(client.config), repr(client)):
        assert KEY not in text
        assert "parent-secret" not in text
        assert "<set>" in text
