"""Fitted scikit-learn models on disk in skops' format, never pickle: loading a file from the shared
media folder builds only the types listed here and runs no code of the file's choosing."""

from __future__ import annotations

# Beyond what skops trusts already (scikit-learn's public estimators, numpy, plain containers): our
# own holders of fitted models, and scikit-learn internals that the fitted models keep.
TRUSTED_TYPES = (
    "curation.ml.discriminator.DiscriminatorFit",
    "curation.ml.evaluation.Evaluation",
    "curation.ml.raters.InkModel",
    "curation.ml.raters.InkModel",
    "curation.ml.raters.RaterModel",
    "curation.ml.real.RealModels",
    "curation.ml.reference.ReferenceClassifier",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "training.data.DataSplit",
)
SUFFIX = ".skops"


def dump_model(model) -> bytes:
    # skops is imported here, not at the top: importing it imports every scikit-learn module (torch's
    # array-API adapter among them). Only the workers, which load torch anyway, read and write models.
    import skops.io

    return skops.io.dumps(model)


def load_model(data: bytes):
    """The model stored in `data`; a file holding any type not trusted here is refused
    (skops.io.exceptions.UntrustedTypesFoundException), as is anything that is not a skops file."""
    import skops.io

    return skops.io.loads(data, trusted=list(TRUSTED_TYPES))
