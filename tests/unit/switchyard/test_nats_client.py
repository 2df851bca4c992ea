"""NATS credentials from the URL: each user's inbox prefix, and no password in logs."""

import pytest

from switchyard.nats_client import inbox_prefix, redacted, servers, stream_replicas


def test_each_user_gets_its_own_inbox_prefix() -> None:
    assert inbox_prefix("nats://router:s3cret@127.0.0.1:4222") == "_INBOX.router"
    assert inbox_prefix("nats://127.0.0.1:4222") == "_INBOX"


def test_redacted_url_keeps_user_and_host_only() -> None:
    assert redacted("nats://router:s3cret@127.0.0.1:4222") == "nats://router:***@127.0.0.1:4222"
    assert redacted("nats://router:s3cret@nats.svc") == "nats://router:***@nats.svc"
    assert redacted("nats://127.0.0.1:4222") == "nats://127.0.0.1:4222"


def test_a_cluster_is_a_comma_separated_list() -> None:
    cluster = "nats://router:s3cret@10.0.0.1:4222, nats://router:s3cret@10.0.0.2:4222"
    assert servers(cluster) == ["nats://router:s3cret@10.0.0.1:4222", "nats://router:s3cret@10.0.0.2:4222"]
    assert inbox_prefix(cluster) == "_INBOX.router"
    assert redacted(cluster) == "nats://router:***@10.0.0.1:4222,nats://router:***@10.0.0.2:4222"


def test_stream_replicas_from_the_setting() -> None:
    assert stream_replicas({}) == 1
    assert stream_replicas({"SWITCHYARD_NATS_REPLICAS": ""}) == 1  # empty counts as unset, like every setting
    assert stream_replicas({"SWITCHYARD_NATS_REPLICAS": "3"}) == 3
    for bad in ("0", "6", "three"):
        with pytest.raises(ValueError, match="SWITCHYARD_NATS_REPLICAS"):
            stream_replicas({"SWITCHYARD_NATS_REPLICAS": bad})
