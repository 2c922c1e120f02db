"""The guide's BentoML service (Chapter 3.2, src/serve.py): bench/anchor/serve_keras.py.

POST /predict takes a multipart/form-data file field `image` (what the suite's service takes,
so the same `hey` load hits both) and answers {"prediction": label, "probabilities": {...}}.
The model, its preprocess (PIL -> float32 1x32x32x3) and its postprocess (softmax over the
logits) come from the BentoML model store, saved there by src/train.py.
"""

from __future__ import annotations

import json
from typing import Annotated

import bentoml
from bentoml.validators import ContentType
from PIL.Image import Image
from pydantic import Field


@bentoml.service(name="celestial_bodies_classifier")
class CelestialBodiesClassifierService:
    bento_model = bentoml.keras.get("celestial_bodies_classifier_model")

    def __init__(self) -> None:
        self.preprocess = self.bento_model.custom_objects["preprocess"]
        self.postprocess = self.bento_model.custom_objects["postprocess"]
        self.model = self.bento_model.load_model()

    @bentoml.api()
    def predict(
        self,
        # The guide's signature: BentoML reads the pydantic Field for the API's schema.
        image: Annotated[Image, ContentType("image/jpeg")] = Field(  # noqa: B008
            description="Planet image to analyze"
        ),
    ) -> Annotated[str, ContentType("application/json")]:
        image = self.preprocess(image)
        predictions = self.model.predict(image)
        result = self.postprocess(predictions)
        return json.dumps(result)
