from pathlib import Path

from cicd import image
from cicd.bento import ModelInfo
from cicd.ci import Revision
from cicd.labels import MODEL_DIGEST_LABEL, MODEL_TAG_LABEL
from cicd.settings import load

ROOT = Path(__file__).resolve().parents[2]

SHA = "0123456789abcdef0123456789abcdef01234567"
MODEL = ModelInfo("celestial_bodies_classifier_model:abc", "sha256:" + "1" * 64)


def test_references_sha_first_then_latest():
    settings = load(ROOT, {"CONTAINER_REGISTRY_HOST": "ghcr.io/org"})
    assert image.references(settings, Revision(SHA)) == (
        f"ghcr.io/org/celestial-bodies-classifier:{SHA}",
        "ghcr.io/org/celestial-bodies-classifier:latest",
    )


def test_dirty_revision_never_takes_the_commit_tag():
    settings = load(ROOT, {})
    tags = image.references(settings, Revision(SHA, dirty_digest="deadbeef"))
    assert tags[0].endswith(f":{SHA}-dirty-deadbeef")


def test_labels_are_oci_plus_model_and_reproducible():
    settings = load(ROOT, {})
    revision = Revision(SHA, timestamp=1_700_000_000, source_url="https://github.com/o/r")
    labels = image.labels(settings, revision, MODEL)
    assert labels["org.opencontainers.image.revision"] == SHA
    assert labels["org.opencontainers.image.source"] == "https://github.com/o/r"
    assert labels["org.opencontainers.image.created"] == "2023-11-14T22:13:20Z"
    assert labels["org.opencontainers.image.version"] == SHA
    assert labels[MODEL_TAG_LABEL] == MODEL.tag
    assert labels[MODEL_DIGEST_LABEL] == MODEL.digest
    assert image.labels(settings, revision, MODEL) == labels


def test_a_clone_of_a_local_path_gets_no_source_label():
    from cicd.ci import source_url

    revision = Revision(SHA, timestamp=1, source_url=source_url({}, "/work/main"))
    labels = image.labels(load(ROOT, {}), revision, MODEL)
    assert "org.opencontainers.image.source" not in labels
    assert labels["org.opencontainers.image.revision"] == SHA


def test_metrics_are_labels_and_only_flat_numbers_are_read(tmp_path):
    (tmp_path / "evaluation").mkdir()
    (tmp_path / "evaluation/metrics.json").write_text(
        '{"val_acc": 0.733333, "epochs": 10, "ok": true, "name": "x", "per_class": {"a": 1}}'
    )
    metrics = image.read_metrics(tmp_path)
    assert metrics == {"val_acc": 0.733333, "epochs": 10.0}
    labels = image.labels(load(ROOT, {}), Revision(SHA, timestamp=1), MODEL, metrics)
    assert labels["model.metrics.val_acc"] == "0.733333"
    assert labels["model.metrics.epochs"] == "10.0"
    assert image.read_metrics(tmp_path / "none") == {}
