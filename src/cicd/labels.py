"""The image labels this suite writes and reads: their names, in one place.

Labels are information, never evidence: anyone who can push an image sets them. The suite
writes them at build time (:func:`cicd.image.labels`) so that `invoke releases` can list a
registry's images without pulling them; every trust decision reads a signed provenance
instead (:mod:`cicd.verify`).
"""

from __future__ import annotations

from collections.abc import Iterable

# OCI's pre-defined annotation keys (image-spec annotations.md), used as image labels.
TITLE_LABEL = "org.opencontainers.image.title"
REVISION_LABEL = "org.opencontainers.image.revision"  # the commit's full SHA
SOURCE_LABEL = "org.opencontainers.image.source"  # the repository's URL (only URLs, never a path)
CREATED_LABEL = "org.opencontainers.image.created"  # the commit's time, not the build's
VERSION_LABEL = "org.opencontainers.image.version"  # the image's tag: the revision tag
DESCRIPTION_LABEL = "org.opencontainers.image.description"

# The model the image serves (BentoML adds none: the suite passes them to the build).
MODEL_TAG_LABEL = "model.tag"
MODEL_DIGEST_LABEL = "model.digest"
# ``model.metrics.<name>``: the model's flat numeric metrics (evaluation/metrics.json), so
# that `invoke releases` shows them from the registry alone.
METRICS_LABEL_PREFIX = "model.metrics."

# Docker 20.10's BuildKit records no layer for a step it took from an imported cache
# (moby/buildkit#2274: "fails every second time"), so an image built from the cache cannot
# serve as the next one's. Each image names, in this label, the tag of the newest earlier
# image whose cache records carry its heaviest built layer (the dependencies), and the next
# build takes that image's cache too (verified as well: cicd.layer_cache.cache_source).
CACHE_BASE_LABEL = "build.layer-cache"

# scripts/build-base-image's mark on its local stand-in for the Python base image.
STAND_IN_LABEL = "io.model-cicd.stand-in-for"

# Every container the suite starts (the smoke test's, the SBOM's) carries this label, its value
# the step, plus the labels of the CONTAINER_LABELS setting: `docker ps --all --filter
# label=io.model-cicd.container` lists them, those a killed job left included.
CONTAINER_LABEL = "io.model-cicd.container"


def container_labels(step: str, extra: Iterable[tuple[str, str]] = ()) -> dict[str, str]:
    """The labels of a container the suite starts for ``step``: the setting's, then its own."""
    return {**dict(extra), CONTAINER_LABEL: step}


def label_options(labels: dict[str, str]) -> list[str]:
    """``docker run`` options giving ``labels``: ``--label key=value`` each."""
    return [option for key, value in labels.items() for option in ("--label", f"{key}={value}")]
