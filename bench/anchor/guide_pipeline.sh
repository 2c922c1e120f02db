#!/usr/bin/env bash
# The guide's whole pipeline as its readers run it, on its Keras/TF model (bench/anchor/repo/):
# the train job (setup-python, `pip install -r requirements.txt`, `dvc repro --pull`) and the
# publish job (`bentoml models import`, `bentoml build src`, `bentoml containerize`,
# `docker push`), from the root of a clone of that repository.
#
#   VENV=/tmp/v REGISTRY=127.0.0.1:5000/ns BENTOML_HOME=/tmp/store bash guide_pipeline.sh
#
# VENV      virtual environment to install into (created if missing: setup-python's Python)
# REGISTRY  registry host[/namespace] (the guide's secrets.GCP_CONTAINER_REGISTRY_HOST)
# IMAGE     image name (default celestial-bodies-classifier-keras)
# PYTHON    interpreter for the venv (default python3.11)
# BENTOML_HOME should point to an empty store: the guide runs on a fresh CI runner.
#
# Differences from the guide's text, each needed for its lines to run here at all (the same as
# bench/guide_baseline.sh's): the model archive is given by its absolute path (BentoML 1.4.40
# fails on a relative one), no `docker login` (the bench registry has no authentication), and
# /usr/bin (Docker 20.10) comes first on PATH for containerize (the Docker 28 client cannot
# build without buildx). Each step prints "@step NAME SECONDS" on stderr for the harness
# (bench/anchor_pipeline.py).
set -euo pipefail
: "${VENV:?set VENV}" "${REGISTRY:?set REGISTRY}"
IMAGE=${IMAGE:-celestial-bodies-classifier-keras}
PYTHON=${PYTHON:-python3.11}
SHA=$(git rev-parse HEAD)   # the guide's ${{ github.sha }}

# the venv (timed as the step "venv") and step_done
source "$(dirname "${BASH_SOURCE[0]}")/../guide_steps.sh"

pip install --requirement requirements.txt
step_done pip-install

dvc repro --pull
step_done dvc-repro

bentoml models import "$PWD/model/celestial_bodies_classifier_model.bentomodel"
step_done bentoml-import

bentoml build src
step_done bentoml-build

bentoml containerize celestial_bodies_classifier:latest \
    --image-tag "$REGISTRY/$IMAGE:latest" \
    --image-tag "$REGISTRY/$IMAGE:$SHA"
step_done containerize

docker push --all-tags "$REGISTRY/$IMAGE"
step_done push
