"""The REST API (Django REST framework): experiments, generations, samples, votes and exports.

Experiments, generations, samples and exports (scores, verdicts, real images, unpublished data) are
for staff alone, reading as well as writing; raters post and read their own votes, staff read
everyone's. The OpenAPI schema is at /api/schema/, with Swagger UI at /api/docs/.
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import mixins, permissions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.response import Response

from curation import rating, tasks
from curation.exports import download
from curation.media import media_url
from curation.ml.experiment_config import PRESETS, ConfigError, preset
from curation.models import Experiment, Export, Generation, Rater, RealImage, Sample, Vote
from curation.rating_views import rater_for
from curation.services import ACTIONS, CurationError, create_experiment, perform_action


class RatersAndStaff(permissions.BasePermission):
    """Raters and staff; a signed-in account that is neither is refused (403)."""

    message = "This account is not a rater. Ask staff to add you as one."

    def has_permission(self, request, view) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        return user.is_staff or Rater.objects.filter(user=user).exists()


# --- serializers --------------------------------------------------------------------------------


class ExperimentSerializer(serializers.ModelSerializer):
    dataset = serializers.CharField(source="dataset.name", read_only=True)
    generation_count = serializers.IntegerField(source="generations.count", read_only=True)

    class Meta:
        model = Experiment
        fields = ["id", "name", "status", "dataset", "config", "real_floor", "cloned_from", "generation_count",
                  "created_at"]
        read_only_fields = fields


class ExperimentCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    preset = serializers.ChoiceField(choices=sorted(PRESETS), default="digits")
    settings = serializers.DictField(
        # Any JSON, null included (dataset_size and continue_learning_rate take it): the configuration's
        # own validation refuses what does not fit, with the same message as the form and the CLI.
        child=serializers.JSONField(allow_null=True), required=False, default=dict,
        help_text='Changes to the preset by dotted name, e.g. {"mix.loop": "fresh", "generations": 5}.',
    )

    def validate(self, data):
        try:
            data["config"] = preset(data["preset"]).replace(**data["settings"])
        except ConfigError as error:
            raise ValidationError({"settings": [str(error)]}) from error
        return data


class GenerationSerializer(serializers.ModelSerializer):
    grid_image = serializers.SerializerMethodField()

    class Meta:
        model = Generation
        fields = ["id", "experiment", "index", "state", "progress_fraction", "progress_message", "error", "failed_step",
                  "metrics", "training_mix", "timings", "checkpoint_sha256", "grid_image", "open_for_raters",
                  "created_at", "finished_at"]
        read_only_fields = fields

    def get_grid_image(self, obj) -> str | None:
        return media_url(obj.grid_image.name) if obj.grid_image else None


class SampleSerializer(serializers.ModelSerializer):
    source = serializers.SerializerMethodField()
    generation_index = serializers.IntegerField(source="generation.index", read_only=True)
    image = serializers.SerializerMethodField()

    class Meta:
        model = Sample
        fields = ["id", "source", "generation", "generation_index", "index", "image", "sha256", "seed", "sampler",
                  "steps", "temperature", "predicted_class", "vote_count", "vote_share", "discriminator_score",
                  "accepted", "accept_reason", "created_at"]
        read_only_fields = fields

    def get_source(self, obj) -> str:
        return "synthetic"

    def get_image(self, obj) -> str:
        return media_url(obj.image.name)


class RealImageSerializer(serializers.ModelSerializer):
    source = serializers.SerializerMethodField()
    image = serializers.SerializerMethodField()

    class Meta:
        model = RealImage
        fields = ["id", "source", "dataset", "index", "label", "image", "sha256"]
        read_only_fields = fields

    def get_source(self, obj) -> str:
        return "real"

    def get_image(self, obj) -> str:
        return media_url(obj.image.name)


class VoteSerializer(serializers.ModelSerializer):
    class Meta:
        model = Vote
        fields = ["id", "rater", "sample", "up", "flagged", "created_at", "updated_at"]
        read_only_fields = fields


class VoteCastSerializer(serializers.Serializer):
    token = serializers.CharField(max_length=32, help_text="The item's token, as `votes/queue/` served it.")
    up = serializers.BooleanField()
    request_id = serializers.RegexField(
        r"^[A-Za-z0-9_-]{8,64}$",
        help_text="A new id for each vote (8-64 letters, digits, - or _): a retry with the same id records nothing twice.",
    )


class QueueItemSerializer(serializers.Serializer):
    token = serializers.CharField()
    image_url = serializers.CharField()
    experiment = serializers.CharField()
    generation = serializers.IntegerField(allow_null=True)
    generation_id = serializers.IntegerField(allow_null=True)


class ExportSerializer(serializers.ModelSerializer):
    download = serializers.SerializerMethodField()

    class Meta:
        model = Export
        fields = ["id", "experiment", "generation", "format", "layout", "include_real", "include_rejected", "status",
                  "progress_fraction", "progress_message", "record_count", "size", "sha256", "error", "download",
                  "created_at", "finished_at"]
        read_only_fields = ["id", "status", "progress_fraction", "progress_message", "record_count", "size", "sha256",
                            "error", "download", "created_at", "finished_at"]

    def get_download(self, obj) -> str | None:
        if obj.status != Export.Status.DONE:
            return None
        return self.context["request"].build_absolute_uri(f"/api/exports/{obj.pk}/download/")

    def validate(self, data):
        generation = data.get("generation")
        if generation is not None and not data["experiment"].generations.filter(index=generation).exists():
            raise ValidationError({"generation": [f"experiment {data['experiment'].pk} has no generation {generation}"]})
        return data


# --- views --------------------------------------------------------------------------------------


class ExperimentViewSet(mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    queryset = Experiment.objects.select_related("dataset").order_by("-created_at")
    permission_classes = [permissions.IsAdminUser]

    def get_serializer_class(self):
        return ExperimentCreateSerializer if self.action == "create" else ExperimentSerializer

    @extend_schema(request=ExperimentCreateSerializer, responses={201: ExperimentSerializer})
    def create(self, request, *args, **kwargs):
        given = ExperimentCreateSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        try:
            experiment = create_experiment(name=given.validated_data["name"], config=given.validated_data["config"],
                                           created_by=request.user)
        except (CurationError, ConfigError) as error:
            raise ValidationError({"settings": [str(error)]}) from error
        return Response(ExperimentSerializer(experiment).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        request=None,
        parameters=[OpenApiParameter("name", str, OpenApiParameter.PATH, enum=list(ACTIONS))],
        responses={200: ExperimentSerializer, 409: inline_serializer("ActionRefused", {"detail": serializers.CharField()})},
    )
    @action(detail=True, methods=["post"], url_path=r"actions/(?P<name>[a-z]+)")
    def run_action(self, request, pk=None, name=None):
        """Start, pause, resume, advance, retry or cancel; refused with 409 when the state does not allow it."""
        experiment = self.get_object()
        if name not in ACTIONS:
            raise NotFound(f"no action {name!r}; actions are {', '.join(ACTIONS)}")
        try:
            generation = perform_action(experiment=experiment, action=name)
        except CurationError as error:
            return Response({"detail": str(error)}, status=status.HTTP_409_CONFLICT)
        if generation is not None:
            tasks.enqueue(generation.pk)
        experiment.refresh_from_db()
        return Response(ExperimentSerializer(experiment).data)


class GenerationViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = GenerationSerializer
    permission_classes = [permissions.IsAdminUser]

    @extend_schema(parameters=[OpenApiParameter("experiment", int, description="Only this experiment's generations.")])
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    def get_queryset(self):
        queryset = Generation.objects.order_by("experiment_id", "index")
        experiment = _int_param(self.request, "experiment")
        return queryset.filter(experiment_id=experiment) if experiment is not None else queryset


SAMPLE_FILTERS = [
    OpenApiParameter("generation", int, description="Generation id."),
    OpenApiParameter("experiment", int, description="Experiment id."),
    OpenApiParameter("accepted", bool, description="Curation's verdict (synthetic samples)."),
    OpenApiParameter("source", str, enum=["synthetic", "real"],
                     description="synthetic samples (default), or the real images an experiment trained on (needs experiment)."),
]


class SampleViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = SampleSerializer
    permission_classes = [permissions.IsAdminUser]

    @extend_schema(parameters=SAMPLE_FILTERS, responses=SampleSerializer(many=True))
    def list(self, request, *args, **kwargs):
        if request.query_params.get("source", "synthetic") == "real":
            return self._real(request)
        return super().list(request, *args, **kwargs)

    def get_queryset(self):
        source = self.request.query_params.get("source", "synthetic")
        if source not in ("synthetic", "real"):
            raise ValidationError({"source": ["source is synthetic or real"]})
        queryset = Sample.objects.select_related("generation").order_by("generation_id", "index")
        generation = _int_param(self.request, "generation")
        experiment = _int_param(self.request, "experiment")
        if generation is not None:
            queryset = queryset.filter(generation_id=generation)
        if experiment is not None:
            queryset = queryset.filter(generation__experiment_id=experiment)
        accepted = self.request.query_params.get("accepted")
        if accepted is not None:
            if accepted.lower() not in ("true", "false", "1", "0"):
                raise ValidationError({"accepted": ["accepted is true or false"]})
            queryset = queryset.filter(accepted=accepted.lower() in ("true", "1"))
        return queryset

    def _real(self, request):
        experiment_id = _int_param(request, "experiment")
        if experiment_id is None:
            raise ValidationError({"experiment": ["source=real lists an experiment's real images: give experiment"]})
        experiment = Experiment.objects.filter(pk=experiment_id).first()
        if experiment is None:
            raise NotFound(f"no experiment {experiment_id}")
        used = set(experiment.real_pool) | set(
            experiment.generations.values_list("training_members__real_image_id", flat=True).exclude(
                training_members__real_image_id=None)
        )
        page = self.paginate_queryset(RealImage.objects.filter(pk__in=used).order_by("index"))
        return self.get_paginated_response(RealImageSerializer(page, many=True).data)


class VoteViewSet(mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    """Votes: raters get items from `queue` and post their votes by token (never a second vote on one
    item); listing votes is for staff, since a rater's own list would tell their samples from gold."""

    serializer_class = VoteSerializer
    permission_classes = [RatersAndStaff]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no user
            return Vote.objects.none()
        if not self.request.user.is_staff:
            raise PermissionDenied("listing votes is for staff; raters post theirs (a rater's own list would tell "
                                   "their samples from the gold items)")
        return Vote.objects.order_by("-updated_at")

    @extend_schema(request=VoteCastSerializer, responses={
        200: inline_serializer("VoteRecorded", {"ok": serializers.BooleanField()}),
        409: inline_serializer("VoteNotNeeded", {"detail": serializers.CharField(), "skip": serializers.BooleanField()}),
    })
    def create(self, request, *args, **kwargs):
        """Vote on an item served to you (by its token): up or down. Voting again changes the vote."""
        given = VoteCastSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        rater = rater_for(request.user)
        if rater is None:
            return Response({"detail": "you are not a rater: ask staff to add you"}, status=status.HTTP_403_FORBIDDEN)
        try:
            rating.cast(rater=rater, **given.validated_data)
        except rating.VoteNotNeeded as error:
            return Response({"detail": str(error), "skip": True}, status=status.HTTP_409_CONFLICT)
        except CurationError as error:
            return Response({"detail": str(error)}, status=status.HTTP_400_BAD_REQUEST)
        return Response({"ok": True})

    @extend_schema(parameters=[OpenApiParameter("count", int, description="How many items (1-50, default 8).")],
                   responses=QueueItemSerializer(many=True))
    @action(detail=False, methods=["get"])
    def queue(self, request):
        """The next items for you to rate, held for you for a few minutes (as the rating page gets them)."""
        rater = rater_for(request.user)
        if rater is None:
            return Response({"detail": "you are not a rater: ask staff to add you"}, status=status.HTTP_403_FORBIDDEN)
        count = _int_param(request, "count") or 8
        if not 1 <= count <= 50:
            raise ValidationError({"count": ["count is from 1 to 50"]})
        try:
            items = rating.next_items(rater=rater, count=count)
        except CurationError as error:
            return Response({"detail": str(error)}, status=status.HTTP_403_FORBIDDEN)
        return Response(items)


class ExportViewSet(mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    """Exports run as Celery tasks: create one, poll its status, download the file once done."""

    serializer_class = ExportSerializer
    permission_classes = [permissions.IsAdminUser]
    queryset = Export.objects.order_by("-created_at")

    def perform_create(self, serializer):
        export = Export(**serializer.validated_data, created_by=self.request.user)
        tasks.queue_export(export)
        serializer.instance = export

    @extend_schema(responses={(200, "application/octet-stream"): OpenApiTypes.BINARY, 409: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["get"])
    def download(self, request, pk=None):
        export = self.get_object()
        if export.status != Export.Status.DONE:
            return Response({"detail": f"the export is {export.status}" + (f": {export.error}" if export.error else "")},
                            status=status.HTTP_409_CONFLICT)
        return download(export)


def _int_param(request, name: str):
    value = request.query_params.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ValidationError({name: [f"{name} must be an integer id"]}) from None

