"""Celestial bodies classifier: the experiment behind the DVC pipeline and the service.

Kept deliberately empty of imports: the service image only ships the modules it needs
(`images`, `preprocess`, `classifier`) and must not pay for scikit-learn or matplotlib,
so every module is imported explicitly where it is used.
"""

# Names the code gives to what it makes. The suite imports none of this package: invoke.yaml
# tells it the model's name and the base image (suite.model.name, suite.base_image; a unit
# test checks that they agree with these), and it reads the bento's name from bentofile.yaml.
MODEL_NAME = "celestial_bodies_classifier_model"  # in the BentoML store
SERVICE_NAME = "celestial_bodies_classifier"  # the BentoML service, hence the bento's name
MODEL_ARCHIVE = f"{MODEL_NAME}.bentomodel"  # the exported model, in the train stage's model/
# The service image's base (serve.py builds on it; the provenance records its digest).
RUNTIME_BASE_IMAGE = "python:3.11-slim"
