"""Celestial bodies classifier: the experiment behind the DVC pipeline and the service.

Kept deliberately empty of imports: the service image only ships the modules it needs
(`images`, `preprocess`, `classifier`) and must not pay for scikit-learn or matplotlib,
so every module is imported explicitly where it is used.
"""

MODEL_NAME = "celestial_bodies_classifier_model"
SERVICE_NAME = "celestial_bodies_classifier"
