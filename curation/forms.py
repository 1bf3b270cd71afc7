"""The experiment form: every loop setting of PRODUCT.md, validated by the configuration itself."""

from __future__ import annotations

import copy

from django import forms

from curation.ml.experiment_config import BOUNDS, PRESETS, RATER_KINDS, Bound, ConfigError, ExperimentConfig
from curation.ml.policy import ACCEPTANCE, CURATING, POLICIES
from curation.models import Export, RealDataset
from generation.config import SAMPLERS
from training.mix import LOOPS

MODEL_SIZES = {"small": (16, 32), "large": (64, 128)}
SCHEDULES = (("squaredcos_cap_v2", "cosine"), ("linear", "linear"))


def _choices(values) -> list[tuple[str, str]]:
    return [(v, v) for v in values]


# (section, dotted setting, form field). The form reads its initial values from a configuration and
# writes the user's values back with `ExperimentConfig.replace`, so any rule the configuration
# enforces (a fully-synthetic loop has no real data, a budget within the samples...) is enforced here.
# The fields carry no bounds of their own: the configuration's (BOUNDS) refuse a value, with the same
# message as the API and the command line, and give the browser its min and max.
SETTINGS = [
    ("Loop", "generations", forms.IntegerField(help_text="Including G0.")),
    ("Loop", "mix.loop", forms.ChoiceField(choices=_choices(LOOPS), label="Loop type",
                                           help_text="fully-synthetic: only the last generation's accepted samples; "
                                           "augmentation: a fixed real set plus synthetic; fresh: new real data each generation.")),
    ("Loop", "mix.real_fraction", forms.FloatField(label="Real fraction",
                                                   help_text="Real share of each training set after G0 (0 for fully-synthetic).")),
    ("Loop", "mix.accumulate", forms.BooleanField(required=False, label="Accumulate synthetic data",
                                                  help_text="Draw synthetic images from every generation so far, not only the last.")),
    ("Loop", "mix.train_size", forms.IntegerField(label="Training set size")),
    ("Loop", "mix.keep_real", forms.BooleanField(required=False, label="Keep all real data",
                                                 help_text="Augmentation: train on the whole real pool every generation "
                                                           "(the training set size then bounds nothing).")),
    ("Loop", "mix.synthetic_ratio", forms.FloatField(required=False, label="Synthetic per real image, at most",
                                                     help_text="Caps the synthetic part (0.5: a third of the set). "
                                                               "Empty: no cap.")),
    ("Loop", "pool_size", forms.IntegerField(label="Real pool for G0",
                                             help_text="The rest of the real data is the fresh loop's reservoir.")),
    ("Loop", "auto_advance", forms.BooleanField(required=False, label="Advance automatically",
                                                help_text="Off: each next generation waits for staff to press Advance.")),
    ("Sampling", "samples_per_generation", forms.IntegerField(label="Samples per generation")),
    ("Sampling", "sample.sampler", forms.ChoiceField(choices=_choices(SAMPLERS), label="Sampler")),
    ("Sampling", "sample.steps", forms.IntegerField(label="Sampler steps")),
    ("Sampling", "sample.temperature", forms.FloatField(label="Sampling temperature",
                                                         help_text="The sampling bias: below 1 truncates toward typical samples (the MAD paper's λ).")),
    ("Sampling", "sample.guidance", forms.FloatField(label="Negative guidance w",
                                                      help_text="From G1 on, steer away from a guide model: "
                                                                "(1 + w) base - w guide. 0: off.")),
    ("Sampling", "guidance_source", forms.ChoiceField(
        choices=[("own", "own: the previous generation's samples"), ("rejected", "rejected: those curation turned down")],
        label="Guide trained on")),
    ("Sampling", "guidance_steps", forms.IntegerField(label="Guide fine-tuning steps")),
    ("Sampling", "metric_samples", forms.IntegerField(label="Samples for metrics")),
    ("Curation", "curation.policy", forms.ChoiceField(choices=_choices(POLICIES), label="Curation policy")),
    ("Curation", "curation.threshold", forms.FloatField(label="Acceptance threshold")),
    ("Curation", "curation.acceptance", forms.ChoiceField(
        choices=_choices(ACCEPTANCE), label="Acceptance",
        help_text="threshold: keep what scores at or above the threshold; resample: keep each sample with probability "
                  "min(c, s/(1-s))/c, thinning what the model over-produces instead of cutting it off.")),
    ("Curation", "curation.resample_cap", forms.FloatField(label="Resampling cap c",
                                                          help_text="Samples whose odds reach c are always kept.")),
    ("Curation", "curation.discriminator", forms.ChoiceField(
        choices=[("votes", "votes: fitted on this generation's votes"),
                 ("verifier", "verifier: held-out real images against the samples, votes pooled")],
        label="Discriminator", help_text="What scores the samples nobody rated.")),
    ("Curation", "curation.keep", forms.FloatField(
        label="Share kept by match", help_text="match: the share of the samples kept, those that together best stand "
                                               "for held-out real images (kernel herding in the metrics' feature space).")),
    ("Curation", "curation.diversity_guard", forms.BooleanField(required=False, label="Diversity guard",
                                                                 help_text="Accept per class in the real data's proportions.")),
    ("Curation", "curation.guard_mode", forms.ChoiceField(
        choices=[("classes", "classes: each class its best-scored samples"),
                 ("coverage", "coverage: each class a spread of samples, unrated ones rescued")],
        label="Guard keeps")),
    ("Curation", "curation.guard_floor", forms.FloatField(label="Guard floor",
                                                           help_text="The lowest score the guard may accept to fill a class's quota.")),
    ("Curation", "curation.match", forms.ChoiceField(choices=_choices(CURATING), required=False,
                                                     label="Random-matched copies",
                                                     help_text="Under random-matched: the policy whose number of "
                                                               "acceptances it draws at random.")),
    ("Rating", "rating.raters", forms.ChoiceField(choices=_choices(RATER_KINDS), label="Raters")),
    ("Rating", "rating.votes_per_sample", forms.IntegerField(label="Votes needed per sample")),
    ("Rating", "rating.rating_budget", forms.IntegerField(label="Samples rated per generation",
                                                          help_text="The discriminator scores the rest.")),
    ("Rating", "rating.active_learning", forms.BooleanField(required=False, label="Active learning",
                                                            help_text="Show raters the samples the discriminator is least sure of first.")),
    ("Rating", "rating.gold_rate", forms.FloatField(label="Gold item rate")),
    ("Model", "model.block_out_channels", forms.ChoiceField(
        choices=[(k, f"{k} ({'/'.join(map(str, v))} channels)") for k, v in MODEL_SIZES.items()], label="UNet size")),
    ("Model", "model.beta_schedule", forms.ChoiceField(choices=SCHEDULES, label="Training noise schedule")),
    ("Model", "train.steps", forms.IntegerField(label="Training steps")),
    ("Model", "train.batch_size", forms.IntegerField(label="Batch size")),
    ("Model", "train.learning_rate", forms.FloatField(label="Learning rate")),
    ("Model", "continue_training", forms.BooleanField(required=False, label="Continue from the previous generation",
                                                      help_text="After G0, fine-tune the previous weights instead of training from scratch.")),
    ("Model", "continue_steps", forms.IntegerField(label="Steps when continuing")),
    ("Model", "continue_learning_rate", forms.FloatField(
        required=False, label="Learning rate when continuing",
        help_text="Empty: the training learning rate.")),
    ("Model", "train.warm_ema", forms.BooleanField(required=False, label="Warm EMA when continuing",
                                                   help_text="The weight average starts from the previous weights at "
                                                             "full decay instead of restarting.")),
    ("Model", "seed", forms.IntegerField(label="Seed")),
]


def _field_name(dotted: str) -> str:
    return dotted.replace(".", "__")


def _show_bounds(field: forms.Field, bound: Bound | None) -> None:
    """The setting's range as the number input's min and max, and in its help text."""
    if bound is None or bound.kind not in ("int", "number"):
        return
    field.widget.attrs.update({"min": bound.low, "max": bound.high})
    if bound.kind == "number":
        field.widget.attrs["step"] = "any"
    field.help_text = " ".join(filter(None, [field.help_text, f"{bound.describe().capitalize()}."]))


def _get(config: dict, dotted: str):
    value = config
    for part in dotted.split("."):
        value = value[part]
    if dotted == "model.block_out_channels":
        return next((k for k, v in MODEL_SIZES.items() if tuple(value) == v), "small")
    return value


class ExperimentForm(forms.Form):
    name = forms.CharField(max_length=200)

    def __init__(self, *args, base: ExperimentConfig, **kwargs):
        super().__init__(*args, **kwargs)
        self.base = base
        data = base.to_dict()
        names = ["digits", *RealDataset.objects.exclude(name="digits").order_by("name").values_list("name", flat=True)]
        self.fields["dataset"] = forms.ChoiceField(
            choices=[(n, n) for n in names], initial=base.dataset, label="Real dataset",
            help_text="digits (built in) or a dataset imported on the Datasets page.",
        )
        for section, dotted, field in SETTINGS:
            field = copy.deepcopy(field)  # forms must not share field instances
            field.initial = _get(data, dotted)
            field.section = section
            _show_bounds(field, BOUNDS.get(dotted))
            self.fields[_field_name(dotted)] = field

    def sections(self) -> list[tuple[str, list]]:
        grouped: dict[str, list] = {}
        for section, dotted, _ in SETTINGS:
            grouped.setdefault(section, []).append(self[_field_name(dotted)])
        return list(grouped.items())

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        changes = {"dataset": cleaned["dataset"]}
        for _, dotted, _ in SETTINGS:
            value = cleaned[_field_name(dotted)]
            if value == "":  # an optional choice left out keeps the base configuration's value
                continue
            if dotted == "model.block_out_channels":
                value = list(MODEL_SIZES[value])
                changes["model.norm_num_groups"] = 8 if value[0] < 32 else 32
                changes["model.layers_per_block"] = 1 if value[0] < 32 else 2
            changes[dotted] = value
        try:
            self.config = self.base.replace(**changes)
        except ConfigError as error:
            field = _field_name(error.setting)
            if field in self.fields:
                self.add_error(field, str(error))
            else:
                raise forms.ValidationError(f"These settings do not work together: {error}.") from error
        return cleaned


PRESET_CHOICES = sorted(PRESETS)


class ExportForm(forms.ModelForm):
    generation = forms.TypedChoiceField(coerce=int, required=False, empty_value=None, label="Generation")

    class Meta:
        model = Export
        fields = ["format", "generation", "layout", "include_rejected", "include_real"]
        labels = {"include_rejected": "Include rejected samples", "include_real": "Include the real data"}

    def __init__(self, *args, experiment, **kwargs):
        super().__init__(*args, **kwargs)
        indices = experiment.generations.order_by("index").values_list("index", flat=True)
        self.fields["generation"].choices = [("", "all generations")] + [(i, f"G{i}") for i in indices]


class DatasetImportForm(forms.Form):
    name = forms.CharField(max_length=100)
    archive = forms.FileField(label="Zip archive", help_text="One sub-folder per class, or images at the top (unlabelled).")

    MAX_BYTES = 512 * 1024**2

    def clean_archive(self):
        upload = self.cleaned_data["archive"]
        if upload.size > self.MAX_BYTES:
            raise forms.ValidationError(f"{upload.name} is {upload.size / 1024**2:.0f} MiB; uploads are limited to "
                                        f"{self.MAX_BYTES // 1024**2} MiB (import larger sets with manage.py import_dataset)")
        return upload
