"""The raters' pages: the one-at-a-time rating page and its JSON endpoints, grid mode, and stats."""

from __future__ import annotations

import json
import uuid
from functools import wraps

from django.contrib.auth.decorators import login_required
from django.http import HttpResponseForbidden, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from curation import rating
from curation.models import Generation, Rater
from curation.selectors import generation_agreement, rater_stats
from curation.services import CurationError

GRID_SIZE = 16
PREFETCH = 8


def rater_for(user) -> Rater | None:
    rater = Rater.objects.filter(user=user).first()
    if rater is None and user.is_staff:
        rater, _ = Rater.objects.get_or_create(user=user, defaults={"name": user.get_username(), "kind": Rater.Kind.HUMAN})
    return rater


def rater_required(view):
    @login_required
    @wraps(view)
    def wrapped(request, *args, **kwargs):
        rater = rater_for(request.user)
        if rater is None:
            return HttpResponseForbidden("This account is not a rater. Ask staff to add you as one.")
        request.rater = rater
        return view(request, *args, **kwargs)

    return wrapped


@login_required
def home(request):
    return redirect("curation:experiment-list" if request.user.is_staff else "curation:rate")


@rater_required
def rate_page(request):
    return render(request, "curation/rate.html", {"rater": request.rater, "prefetch": PREFETCH})


def _counters(rater) -> dict:
    c = rating.counters(rater=rater)
    return {"rated_today": c.rated_today, "left": c.left,
            "left_by_generation": {str(g): n for g, n in c.left_by_generation.items()}}


def _error(message: str, status: int = 400) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


@require_GET
@rater_required
def api_next(request):
    try:
        count = max(1, min(int(request.GET.get("count", PREFETCH)), 50))
    except ValueError:
        return _error("count must be a number")
    exclude = []
    for token in filter(None, request.GET.get("exclude", "").split(",")):
        kind, _, item_id = token.partition(":")
        if kind not in ("sample", "gold") or not item_id.isdigit():
            return _error(f"exclude takes kind:id pairs, not {token!r}")
        exclude.append((kind, int(item_id)))
    try:
        items = rating.next_items(rater=request.rater, count=count, exclude=tuple(exclude))
    except CurationError as error:
        return _error(str(error), status=403)
    return JsonResponse({"items": items, "counters": _counters(request.rater)})


def _json_body(request) -> dict:
    try:
        body = json.loads(request.body or b"{}")
    except json.JSONDecodeError:
        raise CurationError("the request body must be JSON") from None
    if not isinstance(body, dict):
        raise CurationError("the request body must be a JSON object")
    return body


@require_POST
@rater_required
def api_vote(request):
    try:
        body = _json_body(request)
        request_id = str(body.get("request_id") or "")
        if not 8 <= len(request_id) <= 64:
            raise CurationError("request_id must be a unique string of 8 to 64 characters")
        rating.cast(rater=request.rater, kind=body.get("kind"), item_id=body.get("id"), up=body.get("up"),
                    request_id=request_id)
    except CurationError as error:
        return _error(str(error))
    # Only the cheap counter: the page counts "left" down itself and gets it afresh with each fetch.
    return JsonResponse({"ok": True, "counters": {"rated_today": rating.rated_today(rater=request.rater)}})


@require_POST
@rater_required
def api_undo(request):
    try:
        body = _json_body(request)
        item = rating.undo_last(rater=request.rater, request_id=str(body.get("request_id") or "") or None)
    except CurationError as error:
        return _error(str(error))
    return JsonResponse({"item": item, "counters": {"rated_today": rating.rated_today(rater=request.rater)}})


@rater_required
def grid(request):
    if request.method == "POST":
        votes = []
        for key in request.POST:
            if key.startswith("item-"):
                kind, _, item_id = key.removeprefix("item-").partition("-")
                votes.append((kind, item_id, request.POST[key] == "up"))
        try:
            rating.submit_grid(rater=request.rater, votes=votes, request_id=request.POST.get("request_id", "")[:64])
        except CurationError as error:
            return render(request, "curation/grid.html", {"error": str(error), "items": [], "request_id": ""}, status=400)
        return redirect("curation:grid")
    try:
        items = rating.next_items(rater=request.rater, count=GRID_SIZE)
    except CurationError as error:
        return render(request, "curation/grid.html", {"error": str(error), "items": []}, status=403)
    return render(request, "curation/grid.html", {
        "items": items, "request_id": uuid.uuid4().hex, "counters": _counters(request.rater),
    })


@rater_required
def stats(request):
    raters = Rater.objects.filter(kind=Rater.Kind.HUMAN) if request.user.is_staff else [request.rater]
    generations = []
    if request.user.is_staff:
        voted = Generation.objects.filter(samples__votes__isnull=False).distinct().select_related("experiment")
        for generation in voted.order_by("-pk")[:20]:
            generations.append({"generation": generation, "agreement": generation_agreement(generation)})
    return render(request, "curation/stats.html", {"rows": rater_stats(raters), "generations": generations})
