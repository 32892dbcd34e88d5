"""The Slack and S3 sink tables of the documented configuration load as written."""

from __future__ import annotations

import pytest

from receiver.errors import ConfigError
from receiver.settings import load_settings

CONFIG = """
[sinks.team]
type = "slack"
url = "${SLACK_WEBHOOK_URL}"

[sinks.archive]
type = "s3"
bucket = "mj-upscales"
prefix = "events/"
endpoint_url = "${S3_ENDPOINT_URL}"
copy_images = true
"""
ENV = {
    "RELAY_SECRET_KEY": "k",
    "RELAY_API_TOKEN": "t",
    "RELAY_PUBLIC_URL": "http://127.0.0.1:8000",
    "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T0/B0/token",
}


def test_documented_sink_tables_load() -> None:
    """DESIGN §5's ``team`` and ``archive`` tables pass ``check-config``; an empty
    ``S3_ENDPOINT_URL`` means plain AWS."""
    settings = load_settings({**ENV, "S3_ENDPOINT_URL": ""}, config_text=CONFIG)
    assert settings.sinks["team"].type == "slack"
    archive = settings.sinks["archive"]
    assert (archive.type, archive.options["bucket"], archive.options["copy_images"]) == (
        "s3",
        "mj-upscales",
        True,
    )


def test_bad_sink_tables_are_named() -> None:
    """A Slack table without a URL and an S3 table without a bucket are both reported."""
    with pytest.raises(ConfigError) as caught:
        load_settings(ENV, config_text='[sinks.a]\ntype = "slack"\n[sinks.b]\ntype = "s3"\n')
    assert caught.value.problems == ["sinks.a: 'url' is required", "sinks.b: 'bucket' is required"]
