from __future__ import annotations

import pytest

import agentops_async as ao
from agentops_async._config import load_config
from agentops_async._limits import MAX_EVENTS_PER_REQUEST, MAX_TAG_LENGTH

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
        (
            {"max_concurrent_exports": 0},
            {},
            "max_concurrent_exports=0 must be a whole number from 1 to 16",
        ),
        ({"max_concurrent_exports": 17}, {}, "keyword max_concurrent_exports= or AGENTOPS_MAX_"),
        ({"max_concurrent_exports": 2.5}, {}, "max_concurrent_exports=2.5 must be a whole"),
        ({}, {"AGENTOPS_MAX_CONCURRENT_EXPORTS": "many"}, "AGENTOPS_MAX_CONCURRENT_EXPORTS"),
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


@pytest.mark.parametrize(
    ("overrides", "environ"),
    [
        ({"max_batch_size": MAX_EVENTS_PER_REQUEST + 1}, {}),
        ({}, {"AGENTOPS_MAX_BATCH_SIZE": str(MAX_EVENTS_PER_REQUEST * 2)}),
    ],
)
def test_max_batch_size_above_the_events_per_request_limit_is_refused(
    overrides: dict[str, object], environ: dict[str, str]
) -> None:
    with pytest.raises(ao.ConfigError) as raised:
        load_config(overrides, environ=environ)
    message = str(raised.value)
    assert "max_batch_size=" in message
    assert f"limit of {MAX_EVENTS_PER_REQUEST} events per request" in message
    assert "AGENTOPS_MAX_BATCH_SIZE" in message
    assert load_config({"max_batch_size": MAX_EVENTS_PER_REQUEST}, environ={}).max_batch_size == (
        MAX_EVENTS_PER_REQUEST
    )


def test_default_tags_longer_than_the_tag_limit_are_refused_naming_the_tag() -> None:
    long_tag = "t" * (MAX_TAG_LENGTH + 1)
    for attempt in (
        lambda: load_config({"default_tags": ["ok", long_tag]}, environ={}),
        lambda: load_config({}, environ={"AGENTOPS_DEFAULT_TAGS": f"ok,{long_tag}"}),
        lambda: ao.Config(default_tags=("ok", long_tag)),
        lambda: ao.AsyncClient(enabled=False, default_tags=[long_tag]),
    ):
        with pytest.raises(ao.ConfigError, match=r"default_tags: the tag 'tttt") as raised:
            attempt()
        assert f"{MAX_TAG_LENGTH + 1} characters long" in str(raised.value)
        assert f"limit of {MAX_TAG_LENGTH}" in str(raised.value)
    assert load_config({"default_tags": ["t" * MAX_TAG_LENGTH]}, environ={}).default_tags == (
        "t" * MAX_TAG_LENGTH,
    )


@pytest.mark.parametrize(
    ("overrides", "environ"),
    [({"protocol": "otel"}, {}), ({}, {"AGENTOPS_PROTOCOL": "grpc"})],
)
def test_an_unknown_protocol_is_refused_naming_the_field_and_the_valid_values(
    overrides: dict[str, object], environ: dict[str, str]
) -> None:
    with pytest.raises(ao.ConfigError) as raised:
        load_config(overrides, environ=environ)
    message = str(raised.value)
    assert "protocol=" in message and "AGENTOPS_PROTOCOL" in message
    assert "'agentops_v2'" in message and "'otlp'" in message


def test_the_protocol_comes_from_the_environment_and_defaults_to_agentops_v2() -> None:
    assert load_config({}, environ={}).protocol == "agentops_v2"
    assert load_config({}, environ={"AGENTOPS_PROTOCOL": "otlp"}).protocol == "otlp"
    assert load_config({"protocol": "agentops_v2"}, {"AGENTOPS_PROTOCOL": "otlp"}).protocol == (
        "agentops_v2"
    )


def test_protocol_otlp_without_its_target_fails_at_client_construction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name.endswith("._otlp_target") else real(name, *a),
    )
    with pytest.raises(ao.ConfigError, match="protocol='otlp' is not available") as raised:
        ao.AsyncClient(api_key=KEY, endpoint="http://x.test", protocol="otlp")
    assert "protocol='agentops_v2'" in str(raised.value)


def test_max_concurrent_exports_comes_from_the_keyword_then_the_environment() -> None:
    assert load_config({"api_key": KEY}, environ={}).max_concurrent_exports == 2
    env = {"AGENTOPS_MAX_CONCURRENT_EXPORTS": "4"}
    assert load_config({"api_key": KEY}, environ=env).max_concurrent_exports == 4
    assert load_config({"max_concurrent_exports": 1}, environ=env).max_concurrent_exports == 1
