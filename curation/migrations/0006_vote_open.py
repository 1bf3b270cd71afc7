"""A vote carries its sample's generation and whether its sample still needs votes, so that a rater's
votes in flight are counted and excluded from one partial index."""

import django.db.models.deletion
from django.db import migrations, models

HELP_OPEN = ("Its sample still needs votes (the sample's needs_votes, kept in step by the rating services), so "
             "that a rater's votes in flight are counted from an index.")


class Migration(migrations.Migration):

    dependencies = [
        ('curation', '0005_task_attempts'),
    ]

    operations = [
        migrations.AddField(
            model_name='vote',
            name='generation',
            field=models.ForeignKey(db_index=False, null=True, on_delete=django.db.models.deletion.CASCADE,
                                    related_name='+', to='curation.generation'),
        ),
        migrations.AddField(
            model_name='vote',
            name='open',
            field=models.BooleanField(default=False, help_text=HELP_OPEN),
        ),
        migrations.RunSQL(
            "UPDATE curation_vote SET generation_id = (SELECT s.generation_id FROM curation_sample s WHERE s.id = sample_id),"
            " open = (SELECT s.needs_votes FROM curation_sample s WHERE s.id = sample_id)",
            migrations.RunSQL.noop,
        ),
        migrations.AlterField(
            model_name='vote',
            name='generation',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='+',
                                    to='curation.generation'),
        ),
        migrations.AddIndex(
            model_name='vote',
            index=models.Index(condition=models.Q(('open', True)), fields=['rater', 'generation', 'sample'],
                               name='vote_open_by_rater'),
        ),
    ]
