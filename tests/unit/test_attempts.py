"""Attempt records: only the destination's host, and a redacted KiB of its answer."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from receiver.attempts import (
    EXCERPT_BYTES,
    REDACTED,
    _redact_patterns,
    destination_host,
    host_of,
    known_secrets,
    redact,
    response_excerpt,
)


def test_host_of_keeps_host_and_odd_port_only() -> None:
    assert host_of("https://user:pw@hooks.example.com/services/T1/B2/XYZ?token=abc") == (
        "hooks.example.com"
    )
    assert host_of("http://127.0.0.1:8443/hooks?secret=1") == "127.0.0.1:8443"
    assert host_of("https://example.com:443/") == "example.com"
    assert host_of("redis://:pw@cache.internal:6379/0") == "cache.internal:6379"
    assert host_of("not a url") is None
    assert host_of("http://[::1") is None


def test_destination_host_prefers_what_the_sink_declares() -> None:
    assert destination_host({"url": "https://app.example.com/h?k=1"}) == "app.example.com"
    assert destination_host({"endpoint_url": "http://127.0.0.1:9000"}) == "127.0.0.1:9000"
    assert destination_host({"servers": ["nats://n1.local:4222", "nats://n2"]}) == "n1.local:4222"
    assert destination_host({"path": "/tmp/events.jsonl"}) is None
    assert destination_host({"url": "https://a.example"}, "bucket.s3.amazonaws.com") == (
        "bucket.s3.amazonaws.com"
    )


def test_known_secrets_cover_secret_options_urls_and_headers() -> None:
    options = {
        "url": "https://hooks.slack.com/services/T000/B000/abcdefSECRET?token=qwerty123",
        "secret": "whsec_c2VjcmV0c2VjcmV0",
        "headers": {"Authorization": "Bearer abcdef123456", "X-Plain": "visible-value"},
        "bucket": "public-name",
    }
    found = known_secrets(options)
    assert "whsec_c2VjcmV0c2VjcmV0" in found
    assert "/services/T000/B000/abcdefSECRET" in found
    assert "qwerty123" in found
    assert "Bearer abcdef123456" in found
    assert "visible-value" not in found
    assert "public-name" not in found


def test_redact_replaces_known_values_and_secret_looking_tokens() -> None:
    text = (
        '{"ok":false,"echo":"whsec_AAAABBBBCCCC","api_key":"k-123456789",'
        '"next":"https://x.example/cb?sig=zzz&a=1",'
        '"auth":"Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sgn1234567"}'
        " token=abcdefgh password: hunter22 my-known-value"
    )
    cleaned = redact(text, ["my-known-value"])
    for leaked in ("whsec_AAAA", "k-123456789", "sig=zzz", "eyJhbGci", "abcdefgh", "hunter22"):
        assert leaked not in cleaned, leaked
    assert "my-known-value" not in cleaned
    assert REDACTED in cleaned
    assert '"ok":false' in cleaned
    assert "https://x.example/cb?" in cleaned


def test_excerpt_is_at_most_one_kib_and_redacted_before_cutting() -> None:
    secret = "s3cr3t-" + "x" * 20
    body = ("a" * 1015 + secret + "b" * 5000).encode()
    excerpt = response_excerpt(body, [secret])
    assert excerpt is not None
    assert len(excerpt.encode()) <= EXCERPT_BYTES
    assert "s3cr3t" not in excerpt  # no half of it survives the cut
    assert excerpt.startswith("a" * 1015)
    assert response_excerpt(b"") is None
    assert response_excerpt(None) is None
    multibyte = response_excerpt(("é" * 2000).encode())
    assert multibyte is not None
    assert len(multibyte.encode()) <= EXCERPT_BYTES
    assert set(multibyte) == {"é"}  # no broken character at the end
    assert response_excerpt(b"\xff\xfe binary") is not None


_FRAGMENTS = st.sampled_from(
    [
        "whsec_",
        "xoxb-",
        "ghp_",
        "AKIA",
        "ASIA",
        "eyJ",
        "Bearer ",
        "token\t",
        "://",
        "@",
        "?",
        ":",
        "=",
        '"',
        "secret",
        "key",
        "x" * 8,
        "ABCDEFGHIJKLMNOP",
        ".",
        " ",
    ]
)


@given(st.lists(st.one_of(_FRAGMENTS, st.text(max_size=6)), max_size=14).map("".join))
@settings(max_examples=400, deadline=None)
def test_the_fast_path_skips_only_texts_no_pattern_changes(text: str) -> None:
    """``redact`` skips its substitutions when the trigger finds nothing: it must then
    give exactly what running every substitution gives."""
    assert redact(text) == _redact_patterns(text)
