"""Releases without a registry: which tags may move, sizes, the table, the history record."""

from __future__ import annotations

import json

import pytest

from cicd import releases
from cicd.registry import Manifest, _next_page
from cicd.releases import BadTag, Release, check_tag, history_manifest, layers_size


@pytest.mark.parametrize("tag", ["production", "staging", "canary-eu", "v1.2"])
def test_environment_tags_may_move(tag):
    assert check_tag(tag) == tag


@pytest.mark.parametrize(
    ("tag", "error"),
    [
        ("latest", "belongs to the publish session"),
        ("a" * 40, "belongs to the publish session"),
        ("0123abc", "belongs to the publish session"),
        ("a" * 40 + "-dirty-1234", "belongs to the publish session"),
        ("production.history", "history record"),
        ("bad tag", "not a valid tag"),
        ("-x", "not a valid tag"),
        (None, "name the environment tag"),
    ],
)
def test_publish_tags_and_bad_names_are_refused(tag, error):
    with pytest.raises(BadTag, match=error):
        check_tag(tag)


def test_size_is_the_sum_of_the_layers():
    raw = json.dumps({"config": {"size": 7}, "layers": [{"size": 10}, {"size": 32}]}).encode()
    assert layers_size(Manifest("sha256:x", "sha256:c", raw)) == 42
    assert layers_size(Manifest("sha256:x", "sha256:c", b"")) == 0


def test_the_table_is_newest_first_as_given_and_names_the_tags_but_the_revision():
    release = Release(
        "b" * 40, "2026-02-01T00:00:00Z", "model:abc", "sha256:" + "1" * 64,
        {"val_acc": "0.74"}, "sha256:" + "2" * 64, 62_617_467, ("latest", "production", "b" * 40),
    )  # fmt: skip
    header, row = releases.render_releases([release]).splitlines()
    assert header.split()[:3] == ["revision", "created", "model"]
    assert row.split() == [
        "b" * 12, "2026-02-01T00:00:00Z", "abc", "sha256:111111111111", "val_acc=0.74",
        "sha256:222222222222", "62.6", "MB", "latest,", "production",
    ]  # fmt: skip
    assert releases.render_releases([]) == "no published images in the registry"


def test_the_history_record_is_an_oci_artifact_without_layers():
    document = json.loads(history_manifest("sha256:" + "3" * 64, 120))
    assert document["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert document["artifactType"] == document["config"]["mediaType"] == releases.HISTORY_TYPE
    assert document["layers"] == [] and document["config"]["size"] == 120


def test_the_tags_list_follows_the_next_page_link():
    link = '</v2/app/tags/list?last=b&n=2>; rel="next"'
    assert _next_page(link) == "/v2/app/tags/list?last=b&n=2"
    assert _next_page('<https://r.example/v2/app/tags/list?n=2&last=x>; rel="next"') == (
        "/v2/app/tags/list?n=2&last=x"
    )
    assert _next_page("") == ""


def entry(name: str, action: str = "promote") -> releases.Entry:
    return releases.Entry(name, f"sha256:{name}", "", action)


def test_rollbacks_step_back_through_the_promotions_never_forward():
    a, b, c = entry("a"), entry("b"), entry("c")
    in_force = releases.promotions
    assert in_force([a, b, c]) == [a, b, c]
    assert in_force([a, b, c, entry("b", "rollback")]) == [a, b]
    assert in_force([a, b, c, entry("b", "rollback"), entry("a", "rollback")]) == [a]
    # A promotion after a rollback replaces what was rolled back; promoting again is no move.
    assert in_force([a, b, c, entry("b", "rollback"), c, c]) == [a, b, c]
    # --to a release not in force counts as a promotion.
    assert in_force([a, b, entry("c", "rollback")]) == [a, b, entry("c", "rollback")]
