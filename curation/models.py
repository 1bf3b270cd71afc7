"""The loop's records: real data, experiments, generations, samples, raters, votes, discriminators."""

from __future__ import annotations

import secrets

from django.conf import settings
from django.db import models
from django.db.models import Q


class RealDataset(models.Model):
    name = models.CharField(max_length=100, unique=True)
    source = models.CharField(max_length=100, help_text="Where the images came from, e.g. sklearn load_digits.")
    channels = models.PositiveSmallIntegerField()
    height = models.PositiveSmallIntegerField()
    width = models.PositiveSmallIntegerField()
    image_count = models.PositiveIntegerField(default=0)
    class_names = models.JSONField(default=list, blank=True, help_text="Label index -> class name; empty when unlabelled.")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name


class RealImage(models.Model):
    dataset = models.ForeignKey(RealDataset, on_delete=models.CASCADE, related_name="images")
    index = models.PositiveIntegerField()
    label = models.IntegerField(null=True, blank=True)
    image = models.FileField(max_length=300)
    sha256 = models.CharField(max_length=64)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["dataset", "index"], name="unique_real_image_index")]
        ordering = ["dataset", "index"]

    def __str__(self) -> str:
        return f"{self.dataset.name}[{self.index}]"


class Study(models.Model):
    """Ordinary experiments run side by side to answer one question: loop variants x seeds from the same
    settings (`curation.ml.study.StudyPlan`). Its report is computed from their stored metrics."""

    name = models.CharField(max_length=200, unique=True)
    plan = models.JSONField(help_text="StudyPlan.to_dict(): base settings, variants, seeds, generations.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "studies"

    def __str__(self) -> str:
        return self.name


class Experiment(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft"
        RUNNING = "running"
        PAUSED = "paused"
        DONE = "done"
        FAILED = "failed"
        CANCELLED = "cancelled"

    name = models.CharField(max_length=200)
    dataset = models.ForeignKey(RealDataset, on_delete=models.PROTECT, related_name="experiments")
    config = models.JSONField(help_text="ExperimentConfig.to_dict(): every loop setting.")
    # The seeded split of the real data: ids G0 trains on, and the fresh-data reservoir in draw order.
    real_pool = models.JSONField(default=list)
    real_reservoir = models.JSONField(default=list)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.DRAFT)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    cloned_from = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="clones",
        help_text="The experiment whose settings this one started from.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # Metrics of the real data against itself, the floor any generation can reach.
    real_floor = models.JSONField(default=dict, blank=True)
    # Where the experiment is one run of a study: which variant, under which seed.
    study = models.ForeignKey(Study, null=True, blank=True, on_delete=models.PROTECT, related_name="experiments")
    study_variant = models.CharField(max_length=100, blank=True)
    study_seed = models.BigIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["study", "study_variant", "study_seed"], condition=Q(study__isnull=False),
                                    name="one_experiment_per_study_variant_and_seed"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def fd_floor(self):
        """The real-vs-real FD floor as {"mean", "low", "high"}, or None (an older experiment stored one number)."""
        value = (self.real_floor or {}).get("fd")
        if isinstance(value, (int, float)):
            return {"mean": value, "low": value, "high": value}
        return value or None

    @property
    def loop_config(self):
        from curation.ml.experiment_config import ExperimentConfig

        return ExperimentConfig.from_dict(self.config)


class Generation(models.Model):
    class State(models.TextChoices):
        PENDING = "pending"
        TRAINING = "training"
        SAMPLING = "sampling"
        RATING = "rating"
        CURATING = "curating"
        DONE = "done"
        FAILED = "failed"
        CANCELLED = "cancelled"

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="generations")
    index = models.PositiveIntegerField()
    state = models.CharField(max_length=20, choices=State.choices, default=State.PENDING)
    error = models.TextField(blank=True)
    failed_step = models.CharField(max_length=20, blank=True, help_text="The state to resume from on retry.")
    progress_fraction = models.FloatField(default=0.0)
    progress_message = models.CharField(max_length=300, blank=True)
    progress_updated_at = models.DateTimeField(null=True, blank=True)
    # Task bookkeeping (curation.supervision): the message last queued for the current step (an older
    # one is dropped when it arrives) and when; how many deliveries of `started_step` began and never
    # returned (their worker died), so that a step that kills its worker is not redelivered forever.
    queued_task_id = models.CharField(max_length=64, blank=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    started_step = models.CharField(max_length=20, blank=True)
    unfinished_starts = models.PositiveSmallIntegerField(default=0)
    checkpoint_dir = models.CharField(max_length=300, blank=True, help_text="A folder in media storage.")
    checkpoint_sha256 = models.CharField(max_length=64, blank=True)
    training_mix = models.JSONField(default=dict, blank=True, help_text="Counts of real and synthetic training images.")
    metrics = models.JSONField(default=dict, blank=True)
    timings = models.JSONField(default=dict, blank=True, help_text="Seconds spent in each step.")
    grid_image = models.FileField(max_length=300, blank=True)
    open_for_raters = models.BooleanField(default=False, help_text="Its samples are in human raters' queues.")
    votes_needed = models.PositiveSmallIntegerField(default=1, help_text="Votes from distinct raters per sample.")
    samples_needing_votes = models.PositiveIntegerField(
        default=0, help_text="Its samples with needs_votes set, kept in step by the rating services.")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["experiment", "index"], name="unique_generation_index")]
        ordering = ["experiment", "index"]

    def __str__(self) -> str:
        return f"{self.experiment.name} G{self.index}"


class TrainingMember(models.Model):
    """One image in the training set a generation's model was trained on."""

    generation = models.ForeignKey(Generation, on_delete=models.CASCADE, related_name="training_members")
    real_image = models.ForeignKey(RealImage, null=True, blank=True, on_delete=models.PROTECT)
    sample = models.ForeignKey("Sample", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    fresh = models.BooleanField(default=False, help_text="A real image newly drawn from the reservoir.")

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=(Q(real_image__isnull=False, sample__isnull=True) | Q(real_image__isnull=True, sample__isnull=False)),
                name="training_member_is_real_or_synthetic",
            ),
            models.UniqueConstraint(fields=["generation", "real_image"], name="unique_training_real"),
            models.UniqueConstraint(fields=["generation", "sample"], name="unique_training_sample"),
        ]


class Sample(models.Model):
    class AcceptReason(models.TextChoices):
        NONE = "", "rejected or undecided"
        ALL = "all", "no curation"
        HUMAN = "human", "human votes"
        DISCRIMINATOR = "discriminator", "discriminator"
        BOTH = "both", "votes and discriminator"
        GUARD = "guard", "diversity guard"

    generation = models.ForeignKey(Generation, on_delete=models.CASCADE, related_name="samples")
    index = models.PositiveIntegerField()
    seed = models.BigIntegerField()
    sampler = models.CharField(max_length=30)
    steps = models.PositiveIntegerField()
    temperature = models.FloatField()
    image = models.FileField(max_length=300)
    sha256 = models.CharField(max_length=64)
    predicted_class = models.IntegerField(
        null=True, blank=True, help_text="By the curators' classifier (the simulated raters' model): the guard's groups.")
    to_rate = models.BooleanField(default=False, help_text="Within the generation's rating budget.")
    rating_rank = models.FloatField(default=0.0, help_text="Queue order: random, or uncertainty under active learning.")
    vote_count = models.PositiveSmallIntegerField(default=0, help_text="Counted (unflagged) votes.")
    needs_votes = models.BooleanField(default=False, help_text="to_rate and fewer counted votes than needed.")
    vote_share = models.FloatField(null=True, blank=True, help_text="Up-votes / votes, once complete.")
    discriminator_score = models.FloatField(null=True, blank=True)
    accepted = models.BooleanField(null=True, blank=True)
    accept_reason = models.CharField(max_length=20, choices=AcceptReason.choices, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["generation", "index"], name="unique_sample_index")]
        indexes = [
            models.Index(fields=["generation", "accepted"]),
            # The rating queue: open samples of a generation in rank order (partial, so it stays small).
            models.Index(fields=["generation", "rating_rank"], condition=Q(needs_votes=True), name="sample_queue"),
        ]
        ordering = ["generation", "index"]

    def __str__(self) -> str:
        return f"{self.generation} #{self.index}"


class Rater(models.Model):
    class Kind(models.TextChoices):
        HUMAN = "human"
        SIMULATED = "simulated"

    name = models.CharField(max_length=150, unique=True)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    user = models.OneToOneField(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE)
    simulation = models.JSONField(default=dict, blank=True, help_text="SimulatedRaterConfig of a simulated rater.")
    active = models.BooleanField(default=True)
    paused_reason = models.CharField(max_length=300, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(kind="simulated") | Q(user__isnull=False), name="human_rater_has_user"
            )
        ]

    def __str__(self) -> str:
        return self.name


class Vote(models.Model):
    rater = models.ForeignKey(Rater, on_delete=models.CASCADE, related_name="votes")
    sample = models.ForeignKey(Sample, on_delete=models.CASCADE, related_name="votes")
    # The sample's generation, copied (it never changes) so that a rater's votes in flight are counted
    # per generation from one index, without reading their samples.
    generation = models.ForeignKey(Generation, on_delete=models.CASCADE, related_name="+", db_index=False)
    up = models.BooleanField()
    flagged = models.BooleanField(default=False, help_text="Cast by a rater later paused for failing gold items; not counted.")
    open = models.BooleanField(default=False, help_text="Its sample still needs votes (the sample's needs_votes, kept in "
                               "step by the rating services), so that a rater's votes in flight are counted from an index.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["rater", "sample"], name="one_vote_per_rater_and_sample")]
        indexes = [models.Index(fields=["rater", "generation", "sample"], condition=Q(open=True),
                                name="vote_open_by_rater")]

    def __str__(self) -> str:
        return f"{self.rater} {'up' if self.up else 'down'} {self.sample}"


class GoldItem(models.Model):
    """An item whose right answer is known: a real image (expected up) or a known-bad one (down)."""

    class Kind(models.TextChoices):
        REAL = "real"
        BAD = "bad"

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="gold_items")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    image = models.FileField(max_length=300)
    expected_up = models.BooleanField()
    description = models.CharField(max_length=200, blank=True)

    def __str__(self) -> str:
        return f"gold {self.kind} #{self.pk}"


class GoldAnswer(models.Model):
    rater = models.ForeignKey(Rater, on_delete=models.CASCADE, related_name="gold_answers")
    gold_item = models.ForeignKey(GoldItem, on_delete=models.CASCADE, related_name="answers")
    up = models.BooleanField()
    correct = models.BooleanField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["rater", "gold_item"], name="one_answer_per_rater_and_gold")]


class VoteEvent(models.Model):
    """The append-only history of everything a rater did: every vote, change and undo."""

    class Action(models.TextChoices):
        VOTE = "vote"
        UNDO = "undo"

    rater = models.ForeignKey(Rater, on_delete=models.CASCADE, related_name="events")
    sample = models.ForeignKey(Sample, null=True, blank=True, on_delete=models.CASCADE, related_name="events")
    gold_item = models.ForeignKey(GoldItem, null=True, blank=True, on_delete=models.CASCADE, related_name="events")
    action = models.CharField(max_length=10, choices=Action.choices)
    up = models.BooleanField(null=True, blank=True)
    request_id = models.CharField(max_length=100, help_text="The rater's idempotency key: unique per rater.")
    undoes = models.OneToOneField("self", null=True, blank=True, on_delete=models.CASCADE, related_name="undone_by")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["rater", "request_id"], name="one_event_per_rater_request")]
        indexes = [models.Index(fields=["rater", "-created_at"])]
        ordering = ["-created_at", "-pk"]


def new_claim_token() -> str:
    return secrets.token_urlsafe(16)


class Claim(models.Model):
    """An item served to a rater: a sample (held for them for a few minutes, so that concurrent raters
    spread out and no sample gets more votes than it needs) or a gold item. Raters see only its
    opaque token, the same for both kinds, and can vote only on items served to them. A claim outlives
    its vote (it is expired then, so it stops holding a slot) so that the token keeps naming the item."""

    rater = models.ForeignKey(Rater, on_delete=models.CASCADE, related_name="claims")
    sample = models.ForeignKey(Sample, null=True, blank=True, on_delete=models.CASCADE, related_name="claims")
    gold_item = models.ForeignKey(GoldItem, null=True, blank=True, on_delete=models.CASCADE, related_name="claims")
    token = models.CharField(max_length=32, unique=True, default=new_claim_token)
    expires_at = models.DateTimeField(db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # The rater passed on it without a vote: released for others, never served to this rater again.
    skipped = models.BooleanField(default=False, db_default=False)  # (claims are inserted in raw SQL too)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(sample__isnull=False, gold_item__isnull=True) | Q(sample__isnull=True, gold_item__isnull=False),
                name="claim_is_of_a_sample_or_a_gold_item",
            ),
            models.UniqueConstraint(fields=["rater", "sample"], condition=Q(sample__isnull=False),
                                    name="one_claim_per_rater_and_sample"),
            models.UniqueConstraint(fields=["rater", "gold_item"], condition=Q(gold_item__isnull=False),
                                    name="one_claim_per_rater_and_gold"),
        ]
        indexes = [models.Index(fields=["sample", "expires_at"]), models.Index(fields=["rater", "expires_at"])]


class DiscriminatorVersion(models.Model):
    generation = models.ForeignKey(Generation, on_delete=models.CASCADE, related_name="discriminators")
    version = models.PositiveIntegerField()
    features = models.CharField(max_length=300)
    model_file = models.FileField(max_length=300)
    vote_count = models.PositiveIntegerField(help_text="Voted samples it was fitted on.")
    votes_fingerprint = models.CharField(max_length=64, help_text="sha256 of the (sample, verdict) pairs it was fitted on.")
    accuracy = models.FloatField(null=True, blank=True, help_text="On held-out votes.")
    auc = models.FloatField(null=True, blank=True, help_text="On held-out votes.")
    train_count = models.PositiveIntegerField()
    held_out_count = models.PositiveIntegerField()
    positive_rate = models.FloatField()
    note = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["generation", "version"], name="unique_discriminator_version")]
        ordering = ["generation", "-version"]

    def __str__(self) -> str:
        return f"{self.generation} discriminator v{self.version}"


class Export(models.Model):
    """A curated dataset leaving Ouroboros: one file (a zip, or a CSV/JSON manifest) with provenance."""

    class Format(models.TextChoices):
        HF = "hf", "Hugging Face image folder (metadata.jsonl), zipped"
        IMAGEFOLDER = "imagefolder", "torchvision ImageFolder, zipped"
        MANIFEST_CSV = "manifest", "manifest (CSV)"
        MANIFEST_JSON = "manifest-json", "manifest (JSON)"
        PARQUET = "parquet", "Parquet shards with a dataset card, zipped"

    class Layout(models.TextChoices):
        LABEL = "label", "one folder per label"
        VERDICT = "verdict", "accepted / rejected / real"

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="exports")
    generation = models.PositiveIntegerField(null=True, blank=True, help_text="Only this generation's samples; empty for all.")
    format = models.CharField(max_length=20, choices=Format.choices)
    layout = models.CharField(max_length=10, choices=Layout.choices, default=Layout.LABEL)
    include_real = models.BooleanField(default=False)
    include_rejected = models.BooleanField(default=False)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    progress_fraction = models.FloatField(default=0.0)
    progress_message = models.CharField(max_length=300, blank=True)
    file = models.FileField(max_length=300, blank=True)
    size = models.PositiveBigIntegerField(null=True, blank=True)
    sha256 = models.CharField(max_length=64, blank=True)
    record_count = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        scope = f"G{self.generation}" if self.generation is not None else "all generations"
        return f"{self.experiment} {scope} {self.format}"
