"""The smoke test's expected answer (invoke.yaml suite.smoke.expect.function): what the
exported model answers in this process for the smoke request's image, as src/serve.py does."""

import io
import json
import tarfile
from pathlib import Path

import yaml


def reference_answer(archive: Path, payload: bytes) -> dict:
    import bentoml
    from bentoml.exceptions import NotFound
    from PIL import Image

    with tarfile.open(archive) as tar:  # the archive's model.yaml names the model
        member = next(m for m in tar.getmembers() if m.name.removeprefix("./") == "model.yaml")
        info = yaml.safe_load(tar.extractfile(member))
    try:
        stored = bentoml.models.get(f"{info['name']}:{info['version']}")
    except NotFound:
        stored = bentoml.models.import_model(str(Path(archive).resolve()))
    image = stored.custom_objects["preprocess"](Image.open(io.BytesIO(payload)))
    logits = bentoml.keras.load_model(stored).predict(image, verbose=0)
    answer = stored.custom_objects["postprocess"](logits)
    return json.loads(json.dumps(answer))  # the service's JSON, as the image sends it
