#!/usr/bin/env bash
# The guide's CI shell lines (train + deploy jobs), run as they are on this repository.
#
#   VENV=/tmp/v REGISTRY=127.0.0.1:5050 bash bench/guide_baseline.sh     # from a clone's root
#
# VENV      virtual environment to install into (created if missing: setup-python's Python)
# REGISTRY  registry host[/namespace] (the guide's secrets.GCP_CONTAINER_REGISTRY_HOST)
# IMAGE     image name (default celestial-bodies-classifier-guide: distinct from the suite's)
# PYTHON    interpreter for the venv (default python3.11)
# BENTOML_HOME should point to a temporary store: the guide runs on a fresh CI runner.
#
# Differences from the guide's text, each needed for its lines to run here at all:
# - `bentoml build src` -> `bentoml build -f bentofile.yaml src`: the bentofile is at the top
#   level and the build context is src/;
# - `bentoml models import model/...` gets the archive's absolute path: BentoML 1.4.40 fails
#   with a relative one (FileNotFoundError: '/model/...');
# - `bentoml build` gets `--arg model_tag=<the archive's tag>`: the service serves exactly
#   that model (src/serve.py), never the store's `latest`;
# - no `docker login` (the local registry has no authentication);
# - /usr/bin comes before the Docker 28 client on PATH: that client cannot build (no buildx).
# Each step prints "@step NAME SECONDS" on stderr for the harness (bench/pipeline.py).
set -euo pipefail
: "${VENV:?set VENV}" "${REGISTRY:?set REGISTRY}"
IMAGE=${IMAGE:-celestial-bodies-classifier-guide}
PYTHON=${PYTHON:-python3.11}
SHA=$(git rev-parse HEAD)   # the guide's ${{ github.sha }}

# the venv (timed as the step "venv") and step_done
source "$(dirname "${BASH_SOURCE[0]}")/guide_steps.sh"

pip install --requirement requirements-freeze.txt
step_done pip-install

dvc repro --pull
step_done dvc-repro

bentoml models import "$PWD/model/celestial_bodies_classifier_model.bentomodel"
step_done bentoml-import

MODEL_TAG=$(python -c 'import sys; sys.path.insert(0, "src"); from pathlib import Path
from cicd.bentomodel import read_tag
print(read_tag(Path("model/celestial_bodies_classifier_model.bentomodel")))')
bentoml build -f bentofile.yaml --arg "model_tag=$MODEL_TAG" src
step_done bentoml-build

bentoml containerize celestial_bodies_classifier:latest \
    --image-tag "$REGISTRY/$IMAGE:latest" \
    --image-tag "$REGISTRY/$IMAGE:$SHA"
step_done containerize

docker push --all-tags "$REGISTRY/$IMAGE"
step_done push
