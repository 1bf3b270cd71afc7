"""Rating tokens: claims name their item (a sample or a gold item) by an opaque token; request ids are
unique per rater; generations count their samples that still need votes.

Claims are short-lived holds (minutes), so the table is recreated rather than converted.
"""

import django.db.models.deletion
from django.db import migrations, models

import curation.models


def count_samples_needing_votes(apps, schema_editor):
    Generation = apps.get_model("curation", "Generation")
    for generation in Generation.objects.all():
        generation.samples_needing_votes = generation.samples.filter(needs_votes=True).count()
        generation.save(update_fields=["samples_needing_votes"])


class Migration(migrations.Migration):
    dependencies = [("curation", "0003_export_and_dataset_classes")]

    operations = [
        migrations.DeleteModel(name="Claim"),
        migrations.CreateModel(
            name="Claim",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("token", models.CharField(default=curation.models.new_claim_token, max_length=32, unique=True)),
                ("expires_at", models.DateTimeField(db_index=True)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("rater", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="claims",
                                            to="curation.rater")),
                ("sample", models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE,
                                             related_name="claims", to="curation.sample")),
                ("gold_item", models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE,
                                                related_name="claims", to="curation.golditem")),
            ],
            options={
                "constraints": [
                    models.CheckConstraint(
                        condition=models.Q(("gold_item__isnull", True), ("sample__isnull", False))
                        | models.Q(("gold_item__isnull", False), ("sample__isnull", True)),
                        name="claim_is_of_a_sample_or_a_gold_item",
                    ),
                    models.UniqueConstraint(condition=models.Q(("sample__isnull", False)), fields=("rater", "sample"),
                                            name="one_claim_per_rater_and_sample"),
                    models.UniqueConstraint(condition=models.Q(("gold_item__isnull", False)),
                                            fields=("rater", "gold_item"), name="one_claim_per_rater_and_gold"),
                ],
                "indexes": [
                    models.Index(fields=["sample", "expires_at"], name="curation_cl_sample__505120_idx"),
                    models.Index(fields=["rater", "expires_at"], name="curation_cl_rater_i_9df539_idx"),
                ],
            },
        ),
        migrations.AlterField(
            model_name="voteevent",
            name="request_id",
            field=models.CharField(help_text="The rater's idempotency key: unique per rater.", max_length=100),
        ),
        migrations.AddConstraint(
            model_name="voteevent",
            constraint=models.UniqueConstraint(fields=("rater", "request_id"), name="one_event_per_rater_request"),
        ),
        migrations.AddField(
            model_name="generation",
            name="samples_needing_votes",
            field=models.PositiveIntegerField(
                default=0, help_text="Its samples with needs_votes set, kept in step by the rating services."),
        ),
        migrations.RunPython(count_samples_needing_votes, migrations.RunPython.noop),
    ]
