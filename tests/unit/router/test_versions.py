from __future__ import annotations

from router.versions import HISTORY, RoutingDocument, is_stale_file, publish
from switchyard.config import parse_config
from tests.unit.router.scripted import BASE


def config(routes: str):
    return parse_config(BASE + "routes:\n" + routes)


def test_versions_start_at_one_and_change_only_with_effective_content() -> None:
    first = publish(None, "t1", config("  p:\n    targets: [m1]\n  q:\n    targets: [m2]\n"))
    assert (first.version_of("p"), first.version_of("q")) == (1, 1)
    # Writing out a default (strategy: fallback) is not a change; editing q is.
    second = publish(first, "t2", config("  p:\n    strategy: fallback\n    targets: [m1]\n  q:\n    targets: [m3]\n"))
    assert (second.version_of("p"), second.version_of("q")) == (1, 2)
    assert second.routes["q"].history[1]["targets"][0]["model"] == "m2"


def test_a_deleted_slug_keeps_counting_when_it_comes_back() -> None:
    first = publish(None, "t1", config("  p:\n    targets: [m1]\n"))
    gone = publish(first, "t2", config("  other:\n    targets: [m1]\n"))
    assert gone.version_of("p") == 0 and gone.routes["p"].deleted
    back = publish(gone, "t3", config("  p:\n    targets: [m1]\n"))
    assert back.version_of("p") == 2  # never reused, even for the same content


def test_history_is_bounded() -> None:
    document = None
    for i in range(HISTORY + 5):
        document = publish(document, f"t{i}", config(f"  p:\n    targets: [{{model: m1, params: {{seed: {i}}}}}]\n"))
    assert document.version_of("p") == HISTORY + 5
    assert len(document.routes["p"].history) == HISTORY
    assert min(document.routes["p"].history) == 6


def test_document_round_trips_and_recognises_a_stale_file() -> None:
    first = publish(None, "old text", config("  p:\n    targets: [m1]\n"))
    second = publish(first, "new text", config("  p:\n    targets: [m2]\n"))
    copy = RoutingDocument.from_bytes(second.to_bytes())
    assert copy == second
    assert is_stale_file(copy, "old text") and not is_stale_file(copy, "new text")
    assert not is_stale_file(copy, "never seen")
