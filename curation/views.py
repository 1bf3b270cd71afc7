"""Staff pages: experiments, their generations, live progress, plots and the actions that run them."""

from __future__ import annotations

import posixpath
import tempfile
from pathlib import Path
from urllib.parse import unquote

import numpy as np
from django.conf import settings
from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import SuspiciousFileOperation
from django.db import connection
from django.http import FileResponse, Http404, HttpResponse, HttpResponseForbidden, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST
from django_prometheus.exports import ExportToDjangoView

from curation import health, tasks
from curation.authentication import session_or_token_user
from curation.datasets import real_summary
from curation.datasets import import_image_folder
from curation.forms import PRESET_CHOICES, DatasetImportForm, ExperimentForm, ExportForm
from curation.exports import download
from curation.images import grid_png, read_images
from curation.media import open_file
from curation.ml.experiment_config import ConfigError, preset
from curation.models import Experiment, Export, Generation, RealDataset, Study
from curation.selectors import (
    STUDY_PLOTS, experiment_plot_png, generation_agreement, generation_report, study_overview, study_plot_png,
    study_progress,
)
from curation.uploads import upload_too_large
from curation.services import ACTIONS, CurationError, allowed_actions, create_experiment, perform_action
from training.image_folder import MAX_SIDE, ImportProblem

staff_only = staff_member_required(login_url="/accounts/login/")
EXAMPLES = 64


def media(request, path: str):
    """Stored files, for staff (a session or an API token). The app server serves them itself, so a
    deployment needs no separate media server.

    Every stored file is staff-only: samples carry the model's verdicts in their folders, gold items
    announce themselves by name (`experiments/1/gold/real-000.png`), real images and exports are
    unpublished data. Raters see what they rate through /rate/image/<token>, which names nothing."""
    user = session_or_token_user(request)
    if not user.is_authenticated:
        return HttpResponseForbidden("Sign in (or send an API token) to see stored files.")
    stored = stored_file_name(path)
    if stored is None:
        raise Http404("no such file")
    if not user.is_staff:
        return HttpResponseForbidden("Stored files are for staff.")
    try:
        response = FileResponse(open_file(stored), filename=stored.rsplit("/", 1)[-1])
    except (FileNotFoundError, IsADirectoryError, SuspiciousFileOperation):  # or a path out of the media folder
        raise Http404("no such file") from None
    response["Cache-Control"] = "private, max-age=3600"
    return response


def stored_file_name(path: str) -> str | None:
    """The one spelling of a media path that permissions are decided on and the file is served from
    (`a/../exports/x.zip`, `./exports/x.zip`, `%2e/exports/x.zip` all become `exports/x.zip`), or
    None for a path that is absolute, climbs out of the media folder, or holds a NUL byte."""
    name = posixpath.normpath(unquote(path))
    if "\x00" in name or name.startswith("/") or name == "." or name == ".." or name.startswith("../"):
        return None
    return name


def healthz(request):
    """For container health checks: the database answers."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return HttpResponse("ok", content_type="text/plain")


def healthz_ready(request):
    """Readiness, part by part (curation.health): 200 when every part is up, 503 naming what is down."""
    if not health.may_see(request):
        return JsonResponse({"error": f"readiness is {health.REFUSED}"}, status=403)
    ready, checks = health.readiness()
    return JsonResponse({"ready": ready, "checks": checks}, status=200 if ready else 503)


def metrics(request):
    """Prometheus metrics (django-prometheus's and the loop's gauges, curation.monitoring), for staff
    or a scraper sending the health token."""
    if not health.may_see(request):
        return HttpResponseForbidden(f"metrics are {health.REFUSED}", content_type="text/plain")
    return ExportToDjangoView(request)


@staff_only
def experiment_list(request):
    experiments = Experiment.objects.select_related("study").prefetch_related("generations")
    return render(request, "curation/experiment_list.html", {"experiments": experiments})


@staff_only
def experiment_create(request):
    name = request.GET.get("preset") or request.POST.get("preset") or "digits"
    try:
        base = preset(name)
    except ConfigError as error:
        messages.error(request, str(error))
        return redirect("curation:experiment-create")
    return _experiment_form(request, base=base, preset_name=name, cloned_from=None)


@staff_only
def experiment_clone(request, pk: int):
    source = get_object_or_404(Experiment, pk=pk)
    return _experiment_form(request, base=source.loop_config, preset_name="", cloned_from=source)


def _experiment_form(request, *, base, preset_name: str, cloned_from):
    if request.method == "POST":
        form = ExperimentForm(request.POST, base=base)
        if form.is_valid():
            try:
                experiment = create_experiment(
                    name=form.cleaned_data["name"], config=form.config, created_by=request.user, cloned_from=cloned_from
                )
            except CurationError as error:
                form.add_error(None, str(error))
            else:
                messages.success(request, f"Created {experiment.name!r} as a draft: start it when ready.")
                return redirect("curation:experiment-detail", pk=experiment.pk)
    else:
        name = f"{cloned_from.name} (copy)" if cloned_from else ""
        form = ExperimentForm(initial={"name": name}, base=base)
    return render(request, "curation/experiment_form.html", {
        "form": form, "presets": PRESET_CHOICES, "preset": preset_name, "cloned_from": cloned_from,
        "device": settings.OUROBOROS_DEVICE,
    }, status=400 if request.method == "POST" else 200)


@staff_only
def experiment_detail(request, pk: int):
    experiment = get_object_or_404(Experiment, pk=pk)
    generations = list(experiment.generations.order_by("index"))
    return render(request, "curation/experiment_detail.html", {
        "experiment": experiment,
        "generations": generations,
        "actions": [(name, name in allowed_actions(experiment)) for name in ACTIONS],
        "has_metrics": any(g.metrics.get("fd") is not None for g in generations),
        "plot_version": "-".join(f"{g.index}{g.state}" for g in generations),
        "exports": experiment.exports.order_by("-created_at")[:20],
        "export_form": ExportForm(experiment=experiment),
    })


@staff_only
@require_POST
def experiment_action(request, pk: int, action: str):
    experiment = get_object_or_404(Experiment, pk=pk)
    try:
        generation = perform_action(experiment=experiment, action=action)
    except CurationError as error:
        messages.error(request, str(error))
    else:
        if generation is not None:
            tasks.enqueue(generation.pk)
        messages.success(request, DONE_MESSAGES[action].format(name=experiment.name))
    return redirect("curation:experiment-detail", pk=pk)


DONE_MESSAGES = {
    "start": "Started {name!r}: G0 is queued for training.",
    "pause": "Paused {name!r}: its running step stops within a second or two and resumes from its last checkpoint.",
    "resume": "Resumed {name!r}.",
    "advance": "Advanced {name!r}.",
    "retry": "Retrying the failed step of {name!r}.",
    "cancel": "Cancelled {name!r}.",
}


@staff_only
def experiment_progress(request, pk: int):
    experiment = get_object_or_404(Experiment, pk=pk)
    return JsonResponse(
        {
            "status": experiment.status,
            "actions": allowed_actions(experiment),
            "exports": [
                {"id": e.pk, "status": e.status, "progress": e.progress_fraction, "message": e.progress_message}
                for e in experiment.exports.order_by("-created_at")[:20]
            ],
            "generations": [
                {
                    "index": g.index,
                    "state": g.state,
                    "progress": g.progress_fraction,
                    "message": g.progress_message,
                    "error": g.error,
                    "report": generation_report(g),
                }
                for g in experiment.generations.order_by("index")
            ],
        }
    )


@staff_only
def experiment_plot(request, pk: int):
    """The experiment's metric curves over generations, one panel per metric."""
    png = experiment_plot_png(get_object_or_404(Experiment, pk=pk))
    if png is None:
        raise Http404("no generation has metrics yet")
    response = HttpResponse(png, content_type="image/png")
    response["Cache-Control"] = "private, max-age=60"
    return response


@staff_only
def study_list(request):
    studies = [(study, study_progress(study)) for study in Study.objects.all()]
    return render(request, "curation/study_list.html", {"studies": studies})


@staff_only
def study_detail(request, pk: int):
    study = get_object_or_404(Study, pk=pk)
    overview = study_overview(study)
    return render(request, "curation/study_detail.html", {
        "study": study, **overview, "plots": STUDY_PLOTS if overview["headline"] else (),
        "plot_version": overview["progress"]["done"],
    })


@staff_only
def study_progress_json(request, pk: int):
    return JsonResponse(study_progress(get_object_or_404(Study, pk=pk)))


@staff_only
def study_plot(request, pk: int, metric: str):
    """One metric's curves over generations, a curve per variant with its 95% band over seeds."""
    if metric not in STUDY_PLOTS:
        raise Http404(f"no plot of {metric!r}: one of {', '.join(STUDY_PLOTS)}")
    png = study_plot_png(get_object_or_404(Study, pk=pk), metric)
    if png is None:
        raise Http404("no generation has finished yet")
    response = HttpResponse(png, content_type="image/png")
    response["Cache-Control"] = "private, max-age=60"
    return response


@staff_only
def generation_detail(request, pk: int, index: int):
    generation = get_object_or_404(Generation.objects.select_related("experiment"), experiment_id=pk, index=index)
    experiment = generation.experiment
    samples = generation.samples
    histogram = generation.metrics.get("class_histogram") or {}
    proportions = real_summary(experiment.dataset_id).class_proportions
    classes = [
        {"label": label, "share": share, "real": proportions.get(int(label), 0.0),
         "accepted": (generation.metrics.get("acceptance_by_class") or {}).get(label)}
        for label, share in sorted(histogram.items(), key=lambda item: int(item[0]))
    ]
    return render(request, "curation/generation_detail.html", {
        "experiment": experiment,
        "generation": generation,
        "report": generation_report(generation),
        "classes": classes,
        "counts": {
            "samples": samples.count(),
            "accepted": samples.filter(accepted=True).count(),
            "rejected": samples.filter(accepted=False).count(),
            "rated": samples.filter(vote_count__gt=0).count(),
        },
        "discriminators": generation.discriminators.order_by("-version"),
        "agreement": generation_agreement(generation) if generation.state in ("curating", "done") else None,
        "previous": experiment.generations.filter(index=index - 1).first(),
        "next": experiment.generations.filter(index=index + 1).first(),
    })


@staff_only
def generation_examples(request, pk: int, index: int, kind: str):
    """A grid of accepted or rejected samples (the best- or worst-scored first)."""
    generation = get_object_or_404(Generation.objects.select_related("experiment__dataset"), experiment_id=pk, index=index)
    if kind not in ("accepted", "rejected"):
        raise Http404("examples are accepted or rejected")
    rows = generation.samples.filter(accepted=(kind == "accepted"))
    order = "-discriminator_score" if kind == "accepted" else "discriminator_score"
    paths = list(rows.order_by(order, "index").values_list("image", flat=True)[:EXAMPLES])
    if not paths:
        raise Http404(f"no {kind} samples")
    images = read_images(paths, generation.experiment.dataset.channels)
    response = HttpResponse(grid_png(np.asarray(images), columns=16), content_type="image/png")
    response["Cache-Control"] = "private, max-age=60"
    return response


# --- exports and datasets -----------------------------------------------------------------------


@staff_only
@require_POST
def export_create(request, pk: int):
    experiment = get_object_or_404(Experiment, pk=pk)
    form = ExportForm(request.POST, experiment=experiment)
    if not form.is_valid():
        messages.error(request, "Export not started: " + "; ".join(e for errors in form.errors.values() for e in errors))
        return redirect("curation:experiment-detail", pk=pk)
    export = form.save(commit=False)
    export.experiment, export.created_by = experiment, request.user
    tasks.queue_export(export)
    messages.success(request, f"Export {export.pk} queued: it appears below with its progress, then a download link.")
    return redirect("curation:experiment-detail", pk=pk)


@staff_only
def export_download(request, pk: int):
    export = get_object_or_404(Export, pk=pk)
    if export.status != Export.Status.DONE:
        raise Http404(f"export {pk} is {export.status}")
    return download(export)


@staff_only
def dataset_list(request):
    form = DatasetImportForm()
    too_large = request.method == "POST" and upload_too_large(request)
    if too_large:  # told before the body is read (curation.uploads stops it being stored, too)
        messages.error(request, f"Nothing imported: the upload is larger than the {settings.DATASET_UPLOAD_MAX_BYTES // 1024**2} "
                                "MiB limit (DATASET_UPLOAD_MAX_MB); import larger sets with manage.py import_dataset")
    elif request.method == "POST":
        form = DatasetImportForm(request.POST, request.FILES)
        if form.is_valid():
            upload = form.cleaned_data["archive"]
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / Path(upload.name).name
                with path.open("wb") as handle:
                    for chunk in upload.chunks():
                        handle.write(chunk)
                try:
                    dataset = import_image_folder(source=path, name=form.cleaned_data["name"])
                except ImportProblem as error:
                    form.add_error(None, f"Nothing imported: {error}")
                else:
                    messages.success(request, f"Imported {dataset.image_count} images as {dataset.name!r}.")
                    return redirect("curation:dataset-list")
    datasets = RealDataset.objects.order_by("name")
    return render(request, "curation/datasets.html", {
        "form": form, "datasets": datasets, "digits_stored": datasets.filter(name="digits").exists(),
        "max_side": MAX_SIDE,
    }, status=413 if too_large else 400 if form.errors else 200)
