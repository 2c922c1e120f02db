"""The model's files in its exported archive (`.bentomodel`) and in the BentoML store.

Reading an archive (its tag, digest, members) is the suite's, for any model: cicd.bentomodel.
These names are the model's own, shared by training (which writes them), the service (which
loads them) and celestial.reference (which reads them from an archive).
"""

MODEL_FILE = "model.onnx"
CONFIG_FILE = "preprocess.json"  # class names and input size: what preprocess() needs
