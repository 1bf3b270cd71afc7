"""Staff pages: experiments, their generations and live progress."""

from __future__ import annotations

from django.contrib.admin.views.decorators import staff_member_required
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, render

from curation.models import Experiment
from curation.selectors import generation_report


@staff_member_required(login_url="/accounts/login/")
def experiment_list(request):
    experiments = Experiment.objects.prefetch_related("generations")
    return render(request, "curation/experiment_list.html", {"experiments": experiments})


@staff_member_required(login_url="/accounts/login/")
def experiment_detail(request, pk: int):
    experiment = get_object_or_404(Experiment, pk=pk)
    generations = experiment.generations.order_by("index")
    return render(request, "curation/experiment_detail.html", {"experiment": experiment, "generations": generations})


@staff_member_required(login_url="/accounts/login/")
def experiment_progress(request, pk: int):
    experiment = get_object_or_404(Experiment, pk=pk)
    return JsonResponse(
        {
            "status": experiment.status,
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
