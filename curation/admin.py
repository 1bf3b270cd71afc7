"""The Django admin for every model, with the columns, filters and search staff reach for."""

from django.contrib import admin

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
    list_display = ("name", "status", "dataset", "created_by", "created_at")
    list_filter = ("status", "dataset")
    search_fields = ("name",)


@admin.register(models.Generation)
class GenerationAdmin(admin.ModelAdmin):
    list_display = ("experiment", "index", "state", "progress_fraction", "finished_at")
    list_filter = ("state", "experiment")
    search_fields = ("experiment__name",)


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
    list_display = ("rater", "sample", "up", "updated_at")
    list_filter = ("up", "rater__kind")
    search_fields = ("rater__name",)
    list_select_related = ("rater", "sample__generation__experiment")


@admin.register(models.DiscriminatorVersion)
class DiscriminatorVersionAdmin(admin.ModelAdmin):
    list_display = ("generation", "version", "vote_count", "accuracy", "auc", "positive_rate", "created_at")
    list_filter = ("generation__experiment",)


@admin.register(models.TrainingMember)
class TrainingMemberAdmin(admin.ModelAdmin):
    list_display = ("generation", "real_image", "sample", "fresh")
    list_filter = ("fresh", "generation__experiment")


@admin.register(models.GoldItem)
class GoldItemAdmin(admin.ModelAdmin):
    list_display = ("experiment", "kind", "expected_up", "description")
    list_filter = ("kind", "experiment")


@admin.register(models.GoldAnswer)
class GoldAnswerAdmin(admin.ModelAdmin):
    list_display = ("rater", "gold_item", "up", "correct", "created_at")
    list_filter = ("correct", "rater")


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
