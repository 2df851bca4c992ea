"""NATS credentials from the URL: each user's inbox prefix, and no password in logs."""

from switchyard.nats_client import inbox_prefix, redacted


def test_each_user_gets_its_own_inbox_prefix() -> None:
    assert inbox_prefix("nats://router:s3cret@127.0.0.1:4222") == "_INBOX.router"
    assert inbox_prefix("nats://127.0.0.1:4222") == "_INBOX"


def test_redacted_url_keeps_user_and_host_only() -> None:
    assert redacted("nats://router:s3cret@127.0.0.1:4222") == "nats://router:***@127.0.0.1:4222"
    assert redacted("nats://router:s3cret@nats.svc") == "nats://router:***@nats.svc"
    assert redacted("nats://127.0.0.1:4222") == "nats://127.0.0.1:4222"
