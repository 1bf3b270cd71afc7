"""The raters' pages: the one-at-a-time rating page and its JSON endpoints, grid mode, and stats."""

from __future__ import annotations

import json
import uuid
from functools import wraps

from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, HttpResponseForbidden, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from curation import media, rating
from curation.models import Generation, Rater
from curation.selectors import generation_agreement, rater_stats
from curation.services import CurationError

GRID_SIZE = 16
PREFETCH = 8
MAX_EXCLUDE = 100  # tokens a page may list as already queued
MAX_BODY = 4096  # bytes of a vote or undo request: a few short fields


def rater_for(user) -> Rater | None:
    try:
        rater = user.rater  # loaded with the user by the sign-in backend
    except (Rater.DoesNotExist, AttributeError):
        rater = None
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


def _counters(c: rating.Counters) -> dict:
    return {"rated_today": c.rated_today, "left": c.left,
            "left_by_generation": {str(g): n for g, n in c.left_by_generation.items()}}


def _error(message: str, status: int = 400, **extra) -> JsonResponse:
    return JsonResponse({"error": message, **extra}, status=status)


@require_GET
@rater_required
def api_next(request):
    try:
        count = max(1, min(int(request.GET.get("count", PREFETCH)), 50))
    except (TypeError, ValueError):
        return _error("count must be a whole number from 1 to 50")
    tokens = [t for t in request.GET.get("exclude", "").split(",") if t]
    if len(tokens) > MAX_EXCLUDE or not all(rating.TOKEN.fullmatch(t) for t in tokens):
        return _error(f"exclude takes up to {MAX_EXCLUDE} item tokens, separated by commas")
    try:
        items, counters = rating.next_items(rater=request.rater, count=count, exclude=tuple(tokens), with_counters=True)
    except CurationError as error:
        return _error(str(error), status=403)
    return JsonResponse({"items": items, "counters": _counters(counters)})


def _json_body(request) -> dict:
    if len(request.body) > MAX_BODY:
        raise CurationError(f"the request body is over {MAX_BODY} bytes")
    try:
        body = json.loads(request.body.decode("utf-8") or "{}")
    except (ValueError, RecursionError):  # not UTF-8, not JSON, or nested too deep
        raise CurationError("the request body must be a JSON object in UTF-8") from None
    if not isinstance(body, dict):
        raise CurationError("the request body must be a JSON object")
    return body


@require_POST
@rater_required
def api_vote(request):
    try:
        body = _json_body(request)
        rating.cast(rater=request.rater, token=body.get("token"), up=body.get("up"), request_id=body.get("request_id"))
    except rating.VoteNotNeeded as error:
        return _error(str(error), status=409, skip=True)
    except CurationError as error:
        return _error(str(error))
    # Only the cheap counter: the page counts "left" down itself and gets it afresh with each fetch.
    return JsonResponse({"ok": True, "counters": {"rated_today": rating.rated_today(rater=request.rater)}})


@require_POST
@rater_required
def api_skip(request):
    try:
        body = _json_body(request)
        rating.skip(rater=request.rater, token=body.get("token"))
    except CurationError as error:
        return _error(str(error))
    return JsonResponse({"ok": True})


@require_POST
@rater_required
def api_undo(request):
    try:
        body = _json_body(request)
        item = rating.undo_last(rater=request.rater, request_id=rating.check_request_id(body.get("request_id")))
    except CurationError as error:
        return _error(str(error))
    return JsonResponse({"item": item, "counters": {"rated_today": rating.rated_today(rater=request.rater)}})


@require_GET
@rater_required
def item_image(request, token: str):
    """The image of an item served to this rater, named by its token alone."""
    name = rating.served_image(rater=request.rater, token=token)
    if name is None:
        raise Http404("no item with this token was served to you")
    try:
        response = FileResponse(media.open_file(name), content_type="image/png")
    except FileNotFoundError:
        raise Http404("the image file is missing") from None
    response["Cache-Control"] = "private, max-age=3600"
    return response


@rater_required
def grid(request):
    if request.method == "POST":
        votes = []
        for key in request.POST:
            if key.startswith("item-"):
                votes.append((key.removeprefix("item-"), request.POST[key] == "up"))
        try:
            rating.submit_grid(rater=request.rater, votes=votes, request_id=request.POST.get("request_id", ""))
        except CurationError as error:
            return render(request, "curation/grid.html", {"error": str(error), "items": [], "request_id": ""}, status=400)
        return redirect("curation:grid")
    try:
        items, counters = rating.next_items(rater=request.rater, count=GRID_SIZE, with_counters=True)
    except CurationError as error:
        return render(request, "curation/grid.html", {"error": str(error), "items": []}, status=403)
    return render(request, "curation/grid.html", {
        "items": items, "request_id": uuid.uuid4().hex, "counters": _counters(counters),
    })


@rater_required
def stats(request):
    raters = Rater.objects.filter(kind=Rater.Kind.HUMAN) if request.user.is_staff else [request.rater]
    generations = []
    if request.user.is_staff:
        voted = Generation.objects.filter(samples__votes__isnull=False).distinct().select_related("experiment")
        for generation in voted.order_by("-pk")[:20]:
            generations.append({"generation": generation, "agreement": generation_agreement(generation)})
    return render(request, "curation/stats.html", {
        "rows": rater_stats(raters, for_staff=request.user.is_staff), "generations": generations,
        "for_staff": request.user.is_staff,
    })
