"""Fitted models are stored with skops, never pickle: a model file from the shared media folder loads
only trusted types and runs no code."""

import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
from skops.io.exceptions import UntrustedTypesFoundException

from curation import media
from curation.ml.discriminator import fit_discriminator, image_features
from curation.ml.model_files import dump_model, load_model
from training.data import load_digits_dataset


@pytest.fixture(scope="module")
def features_and_votes():
    digits = load_digits_dataset()
    return image_features(digits.images[:400]), digits.labels[:400] % 2 == 0


def test_a_stored_discriminator_scores_as_the_fitted_one(features_and_votes):
    features, votes_up = features_and_votes
    for fit in (fit_discriminator(features, votes_up), fit_discriminator(features, np.ones(len(features), bool))):
        loaded = load_model(dump_model(fit))
        assert np.array_equal(loaded.score(features), fit.score(features))
        assert (loaded.accuracy, loaded.auc, loaded.note) == (fit.accuracy, fit.auc, fit.note)


class NotAModel:
    pass


def test_a_file_holding_an_untrusted_type_is_refused():
    with pytest.raises(UntrustedTypesFoundException, match="NotAModel"):
        load_model(dump_model({"model": NotAModel()}))


class RunsCodeWhenUnpickled:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickle_is_refused_and_runs_no_code(tmp_path):
    marker = tmp_path / "code-ran"
    with pytest.raises(zipfile.BadZipFile):  # a skops file is a zip archive; a pickle is not even opened
        load_model(pickle.dumps(RunsCodeWhenUnpickled(marker)))
    assert not marker.exists()


@pytest.mark.django_db
def test_the_real_models_are_stored_with_skops_and_pages_read_only_their_summary():
    from curation import datasets

    dataset = datasets.ensure_digits_dataset()
    fitted = datasets.real_models(dataset.pk)
    stored = [Path(name) for name in media.names_under("datasets/real-models")]
    assert {p.suffix for p in stored} >= {".skops", ".json"} and not [p for p in stored if p.suffix == ".pkl"]
    datasets._real_models.cache_clear()
    datasets._real_summary.cache_clear()
    loaded = datasets.real_models(dataset.pk)
    images = datasets.real_arrays(dataset.pk).images[:50]
    assert np.array_equal(loaded.reference.predict(images), fitted.reference.predict(images))
    assert np.array_equal(loaded.rater_model.confidence(images), fitted.rater_model.confidence(images))
    summary = datasets.real_summary(dataset.pk)
    assert summary.class_proportions == fitted.class_proportions and summary.real_floor == fitted.real_floor
