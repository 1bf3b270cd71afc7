import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ('curation', '0006_vote_open'),
    ]

    operations = [
        migrations.CreateModel(
            name='Study',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('name', models.CharField(max_length=200, unique=True)),
                ('plan', models.JSONField(help_text='StudyPlan.to_dict(): base settings, variants, seeds, generations.')),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('created_by', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL,
                                                 to=settings.AUTH_USER_MODEL)),
            ],
            options={'ordering': ['-created_at'], 'verbose_name_plural': 'studies'},
        ),
        migrations.AddField(
            model_name='experiment',
            name='study',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT,
                                    related_name='experiments', to='curation.study'),
        ),
        migrations.AddField(
            model_name='experiment',
            name='study_variant',
            field=models.CharField(blank=True, max_length=100),
        ),
        migrations.AddField(
            model_name='experiment',
            name='study_seed',
            field=models.BigIntegerField(blank=True, null=True),
        ),
        migrations.AlterField(
            model_name='sample',
            name='predicted_class',
            field=models.IntegerField(blank=True, null=True, help_text="By the curators' classifier (the simulated "
                                      "raters' model): the guard's groups."),
        ),
        migrations.AddConstraint(
            model_name='experiment',
            constraint=models.UniqueConstraint(condition=models.Q(('study__isnull', False)),
                                               fields=('study', 'study_variant', 'study_seed'),
                                               name='one_experiment_per_study_variant_and_seed'),
        ),
    ]
