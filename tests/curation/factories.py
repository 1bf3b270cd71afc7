"""Small builders for curation tests."""

from __future__ import annotations

from django.contrib.auth import get_user_model

from curation.models import Rater
from curation.services import create_experiment, start_experiment


def started_experiment(config, name="test"):
    experiment = create_experiment(name=name, config=config)
    generation = start_experiment(experiment=experiment)
    return experiment, generation


def human_rater(name="alice") -> Rater:
    user = get_user_model().objects.create_user(username=name, password="pw-" + name)
    return Rater.objects.create(name=name, kind=Rater.Kind.HUMAN, user=user)


def open_generation(config, *, samples: int = 20, votes_needed: int = 2, gold_rate: float = 0.0):
    """An experiment whose G0 is open for human rating with `samples` samples, without training."""
    import numpy as np

    from curation import media
    from curation.images import encode_png
    from curation.models import Generation, Sample
    from curation.rating import open_for_rating
    from curation.services import ensure_gold_items

    config = config.replace(**{"rating.raters": "human", "rating.votes_per_sample": votes_needed,
                               "rating.gold_rate": gold_rate, "rating.gold_real_items": 6, "rating.gold_bad_items": 6})
    experiment, generation = started_experiment(config)
    rng = np.random.default_rng(0)
    rows = []
    for index in range(samples):
        image = rng.random((1, 8, 8)).astype(np.float32)
        path = media.write(f"experiments/{experiment.pk}/g000/samples/{index:05d}.png", encode_png(image))
        rows.append(Sample(generation=generation, index=index, seed=index, sampler="ddim", steps=1, temperature=1.0,
                           image=path, sha256=str(index), to_rate=True, needs_votes=True, rating_rank=index / samples))
    Sample.objects.bulk_create(rows)
    Generation.objects.filter(pk=generation.pk).update(state=Generation.State.RATING)
    open_for_rating(generation)
    ensure_gold_items(experiment=experiment)
    generation.refresh_from_db()
    return generation
