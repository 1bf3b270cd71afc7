"""The Django admin for every model, with the columns, filters and search staff reach for."""

from django.contrib import admin
from django.db.models import Count
from django.urls import reverse
from django.utils.html import format_html

from curation import models


@admin.register(models.RealDataset)
class RealDatasetAdmin(admin.ModelAdmin):
    list_display = ("name", "source", "image_count", "channels", "height", "width", "created_at")
    search_fields = ("name", "source")


@admin.register(models.RealImage)
class RealImageAdmin(admin.ModelAdmin):
    list_display = ("dataset", "index", "label", "sha256")
    list_filter = ("dataset", "label")
    search_fields = ("sha256",)


@admin.register(models.Experiment)
class ExperimentAdmin(admin.ModelAdmin):
    list_display = ("name", "status", "loop", "policy", "generation_count", "dataset", "created_by", "created_at", "page")
    list_filter = ("status", "dataset", "created_at")
    search_fields = ("name", "created_by__username")
    raw_id_fields = ("cloned_from",)

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(generation_total=Count("generations"))

    @admin.display(description="loop")
    def loop(self, obj):
        return obj.config.get("mix", {}).get("loop")

    @admin.display(description="curation")
    def policy(self, obj):
        curation = obj.config.get("curation", {})
        return f"{curation.get('policy')}{' + guard' if curation.get('diversity_guard') else ''}"

    @admin.display(description="generations", ordering="generation_total")
    def generation_count(self, obj):
        return f"{obj.generation_total} / {obj.config.get('generations')}"

    @admin.display(description="staff page")
    def page(self, obj):
        return format_html('<a href="{}">open</a>', reverse("curation:experiment-detail", args=[obj.pk]))


@admin.register(models.Generation)
class GenerationAdmin(admin.ModelAdmin):
    list_display = ("experiment", "index", "state", "progress_fraction", "fd", "recall", "acceptance", "open_for_raters", "finished_at")
    list_filter = ("state", "open_for_raters", "experiment")
    search_fields = ("experiment__name", "checkpoint_sha256")
    list_select_related = ("experiment",)

    @admin.display(description="FD")
    def fd(self, obj):
        return _round(obj.metrics.get("fd"))

    @admin.display(description="recall")
    def recall(self, obj):
        return _round(obj.metrics.get("recall"))

    @admin.display(description="accepted")
    def acceptance(self, obj):
        rate = obj.metrics.get("acceptance_rate")
        return None if rate is None else f"{rate:.0%}"


def _round(value):
    return None if value is None else round(value, 3)


@admin.register(models.Sample)
class SampleAdmin(admin.ModelAdmin):
    list_display = ("generation", "index", "predicted_class", "to_rate", "vote_share", "discriminator_score", "accepted", "accept_reason")
    list_filter = ("accepted", "accept_reason", "to_rate", "sampler", "generation__experiment")
    search_fields = ("sha256",)
    list_select_related = ("generation__experiment",)


@admin.register(models.Rater)
class RaterAdmin(admin.ModelAdmin):
    list_display = ("name", "kind", "user", "active", "paused_reason")
    list_filter = ("kind", "active")
    search_fields = ("name", "user__username")
    actions = ("pause", "resume")

    @admin.action(description="Pause the selected raters and flag their votes")
    def pause(self, request, queryset):
        from curation.rating import pause_rater

        for rater in queryset:
            pause_rater(rater=rater, reason=f"paused by {request.user.get_username()}")

    @admin.action(description="Resume the selected raters")
    def resume(self, request, queryset):
        from curation.rating import resume_rater

        for rater in queryset:
            resume_rater(rater=rater)


@admin.register(models.Vote)
class VoteAdmin(admin.ModelAdmin):
    list_display = ("rater", "sample", "up", "flagged", "updated_at")
    list_filter = ("up", "flagged", "rater__kind", "sample__generation__experiment")
    search_fields = ("rater__name", "sample__sha256")
    list_select_related = ("rater", "sample__generation__experiment")


@admin.register(models.DiscriminatorVersion)
class DiscriminatorVersionAdmin(admin.ModelAdmin):
    list_display = ("generation", "version", "vote_count", "accuracy", "auc", "positive_rate", "note", "created_at")
    list_filter = ("generation__experiment",)
    search_fields = ("generation__experiment__name", "votes_fingerprint")


@admin.register(models.TrainingMember)
class TrainingMemberAdmin(admin.ModelAdmin):
    list_display = ("generation", "real_image", "sample", "fresh")
    list_filter = ("fresh", "generation__experiment")
    raw_id_fields = ("generation", "real_image", "sample")


@admin.register(models.GoldItem)
class GoldItemAdmin(admin.ModelAdmin):
    list_display = ("experiment", "kind", "expected_up", "description")
    list_filter = ("kind", "experiment")
    search_fields = ("description", "experiment__name")


@admin.register(models.GoldAnswer)
class GoldAnswerAdmin(admin.ModelAdmin):
    list_display = ("rater", "gold_item", "up", "correct", "created_at")
    list_filter = ("correct", "rater")
    search_fields = ("rater__name",)


@admin.register(models.VoteEvent)
class VoteEventAdmin(admin.ModelAdmin):
    list_display = ("created_at", "rater", "action", "up", "sample", "gold_item")
    list_filter = ("action", "rater")
    search_fields = ("request_id", "rater__name")

    def has_change_permission(self, request, obj=None):
        return False  # the history is append-only

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(models.Claim)
class ClaimAdmin(admin.ModelAdmin):
    list_display = ("rater", "sample", "expires_at")
    list_filter = ("rater",)
    search_fields = ("rater__name",)
