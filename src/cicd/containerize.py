"""Build this commit's image: ``bentoml containerize`` of its bento, tagged and labelled, with
the layer cache of :mod:`cicd.layer_cache`.

Its own module because the layer cache is taken only from an image whose provenance
verifies (:mod:`cicd.verify`), and verify reads :mod:`cicd.image`'s names: image.py cannot
build without an import cycle.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from cicd import bento
from cicd.bento import BENTOML_ENV
from cicd.image import Image, Target, labels, read_metrics, stand_in_notice, target
from cicd.labels import CACHE_BASE_LABEL
from cicd.layer_cache import cache_login, cache_options, cache_source
from cicd.shell import tool

if TYPE_CHECKING:
    from cicd.context import Run

# BentoML's advice after a build: `docker run -p 3000:3000` would listen on every interface;
# the summary of a publish says how to run the image on 127.0.0.1 instead.
CONTAINERIZE_ADVICE = re.compile(r"To run your newly built Bento container|run --rm -p 3000:3000")


def containerize_stored(run: Run) -> Image:
    """`invoke containerize`: the commit's image from the bento in the store, whose model is
    checked first when this process did not build it (:func:`cicd.bento.check_stored_bento`):
    run alone, the step would otherwise ship whatever model the store holds."""
    goal = target(run)
    bento.check_stored_bento(run, bento.bento_tag(run.settings, goal.revision.tag), goal.model)
    return containerize(run, goal)


def containerize(run: Run, goal: Target | None = None) -> Image:
    """``bentoml containerize`` this commit's bento into its image, tagged and labelled.

    The image records its layers' cache keys (BuildKit's inline cache), and the registry's
    ``latest`` is the build's cache, by digest, when its provenance verifies with the trusted
    key (:func:`cicd.layer_cache.cache_source`): on a cold engine the unchanged layers
    (system, Python environment, dependencies) are the registry's blobs again, so a model or
    code change rebuilds and uploads only the last layers. ``goal``: the commit's image when
    the caller has identified it (default: this commit)."""
    goal = goal or target(run)
    notice = stand_in_notice(run)
    if notice:
        run.runner.echo(notice)
    metrics = read_metrics(run.settings.root)
    image_labels = labels(run.settings, goal.revision, goal.model, metrics)
    cache = cache_source(run, goal.repository)
    if cache.base:
        image_labels[CACHE_BASE_LABEL] = cache.base
    with (
        tempfile.TemporaryDirectory(prefix="containerize-") as scratch,
        cache_login(run, cache.sources) as env,
    ):
        iidfile = Path(scratch) / "image-id"
        bento_tag = bento.bento_tag(run.settings, goal.revision.tag)
        command = [tool("bentoml"), "containerize", bento_tag, "--backend", "docker"]
        for reference in goal.references:
            command += ["--image-tag", reference]
        for key, value in image_labels.items():
            command += ["--opt", f"label={key}={value}"]
        command += cache_options(cache.sources)
        command += ["--opt", f"iidfile={iidfile}"]
        run.runner.run(
            command,
            cwd=run.settings.root,
            env={**BENTOML_ENV, **run.docker.env_for_tools(), **env},
            hint="see model-cicd's docs/troubleshooting.md",
            drop=CONTAINERIZE_ADVICE,
        )
        image_id = iidfile.read_text().strip() if iidfile.exists() else "sha256:<built image>"
    return goal.image(image_id)
