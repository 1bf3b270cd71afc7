"""Who may reach what: every URL of the URL configuration × every kind of visitor, with the status
each must get. The tables below are the specification. They are checked against the resolver: a URL
pattern without an entry fails, so no route is added without deciding who may use it.

Statuses are exact codes, or LOGIN (a redirect to the site's log-in page), ADMIN_LOGIN (to the
admin's), REDIRECT (somewhere else), or a set of those where either answer keeps the secret.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from types import SimpleNamespace

import numpy as np
import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import transaction
from django.test import Client
from django.urls import URLResolver, get_resolver, resolve
from django.urls.resolvers import RoutePattern
from django.utils.regex_helper import normalize

from curation import media
from curation.images import encode_png
from curation.ml.experiment_config import preset
from curation.ml.study import StudyPlan, Variant
from curation.models import Experiment, Export, Generation, Rater, Study, Vote
from curation.services import create_experiment

from .curation.factories import human_rater, open_generation

pytestmark = pytest.mark.django_db

# --- who ----------------------------------------------------------------------------------------

ANONYMOUS = "anonymous"
NON_RATER = "signed-in non-rater"
RATER = "rater"
PAUSED = "paused rater"
STAFF = "staff"
RATER_TOKEN = "rater's API token"
STAFF_TOKEN = "staff API token"
ROLES = (ANONYMOUS, NON_RATER, RATER, PAUSED, STAFF, RATER_TOKEN, STAFF_TOKEN)
NOT_STAFF = (ANONYMOUS, NON_RATER, RATER, PAUSED, RATER_TOKEN)

# --- what they get ------------------------------------------------------------------------------

LOGIN = "redirect to log in"
ADMIN_LOGIN = "redirect to the admin's log in"
REDIRECT = "redirect elsewhere"


def everyone(expected) -> dict:
    return dict.fromkeys(ROLES, expected)


def staff_pages(staff=200) -> dict:
    """Django pages behind staff_member_required: everyone else, API tokens included, logs in."""
    return everyone(LOGIN) | {STAFF: staff}


def staff_api(staff=200) -> dict:
    """DRF routes for staff alone: strangers 401, any other account 403, a session or a token."""
    return dict.fromkeys(NOT_STAFF, 403) | {ANONYMOUS: 401, STAFF: staff, STAFF_TOKEN: staff}


def signed_in_api(expected=200) -> dict:
    return everyone(expected) | {ANONYMOUS: 401}


def signed_in_pages(expected=200) -> dict:
    """Pages behind login_required (sessions only: a token is no session)."""
    return everyone(expected) | {ANONYMOUS: LOGIN, RATER_TOKEN: LOGIN, STAFF_TOKEN: LOGIN}


def token_api(expected) -> dict:
    """Routes about the API token that authenticates the request: no token, no entry."""
    return everyone(401) | {RATER_TOKEN: expected, STAFF_TOKEN: expected}


def rater_api(rater=200, paused=200, staff=200) -> dict:
    """DRF routes for raters and staff (a session or a token); other accounts are refused."""
    return {ANONYMOUS: 401, NON_RATER: 403, RATER: rater, PAUSED: paused, STAFF: staff, RATER_TOKEN: rater,
            STAFF_TOKEN: staff}


def rater_pages(rater=200, paused=200, staff=200) -> dict:
    """The rating pages: sessions only; an account that is not a rater is refused."""
    return {ANONYMOUS: LOGIN, NON_RATER: 403, RATER: rater, PAUSED: paused, STAFF: staff, RATER_TOKEN: LOGIN,
            STAFF_TOKEN: LOGIN}


def rater_json(rater=200, paused=200, staff=200) -> dict:
    """The rating page's JSON endpoints: like the pages, and a stranger may get a 403 instead of a redirect."""
    stranger = frozenset({LOGIN, 403})
    return rater_pages(rater, paused, staff) | {ANONYMOUS: stranger, RATER_TOKEN: stranger, STAFF_TOKEN: stranger}


@dataclass(frozen=True)
class Route:
    """What each role gets from GET, and from POST (an empty body) where the route takes writes."""

    get: dict
    post: dict | None = None
    kwargs: Callable[[SimpleNamespace], dict] = field(default=lambda world: {})
    query: str = ""
    signs_out: bool = False  # ends the session or revokes the token: the next request signs in afresh


def _pk(name):
    return lambda world: {"pk": getattr(world, name).pk}


# Every named route outside the admin. DRF's format-suffix twins (`/api/experiments.json`) follow
# their route by rule; the admin follows ADMIN_RULE below.
ROUTES = {
    # Django's own log-in, log-out and password pages
    "login": Route(get=everyone(200), post=everyone(200)),  # an empty form comes back with its errors
    "logout": Route(get=everyone(405), post=everyone(200), signs_out=True),  # a GET never logs anyone out
    "password_change": Route(get=signed_in_pages(200), post=signed_in_pages(200)),
    "password_change_done": Route(get=signed_in_pages(200)),
    "password_reset": Route(get=everyone(200), post=everyone(200)),
    "password_reset_done": Route(get=everyone(200)),
    "password_reset_confirm": Route(get=everyone(200), post=everyone(200),  # "this link is not valid"
                                    kwargs=lambda world: {"uidb64": "MQ", "token": "not-a-token"}),
    "password_reset_complete": Route(get=everyone(200)),
    # The REST API: scores, verdicts, real images and exports are for staff alone
    "api-root": Route(get=signed_in_api(200)),  # names the routes, nothing more
    "api-token": Route(get=everyone(405), post=everyone(400)),  # no credentials in the body
    "api-token-revoke": Route(get=token_api(405), post=token_api(204), signs_out=True),
    "api-token-revoke-all": Route(get=token_api(405), post=token_api(204), signs_out=True),
    "api-schema": Route(get=everyone(200)),  # the shape of the API, no data (the code is public)
    "api-docs": Route(get=everyone(200)),
    "experiment-list": Route(get=staff_api(200), post=staff_api(400)),
    "experiment-detail": Route(get=staff_api(200), kwargs=_pk("experiment")),
    "experiment-run-action": Route(get=staff_api(405), post=staff_api(409),  # pausing a draft is refused
                                   kwargs=lambda world: {"pk": world.draft.pk, "name": "pause"}),
    "generation-list": Route(get=staff_api(200)),
    "generation-detail": Route(get=staff_api(200), kwargs=_pk("generation")),
    "sample-list": Route(get=staff_api(200)),
    "sample-detail": Route(get=staff_api(200), kwargs=_pk("sample")),
    "export-list": Route(get=staff_api(200), post=staff_api(400)),
    "export-detail": Route(get=staff_api(200), kwargs=_pk("export")),
    "export-download": Route(get=staff_api(200), kwargs=_pk("export")),
    # Raters get items to rate and post votes; listing votes is for staff (a rater's own list would
    # tell their samples from the gold items)
    "vote-queue": Route(get=rater_api(rater=200, paused=403, staff=200)),
    "vote-list": Route(get=rater_api(rater=403, paused=403, staff=200),
                       post=rater_api(rater=400, paused=frozenset({400, 403}), staff=400)),
    "vote-detail": Route(get=rater_api(rater=403, paused=403, staff=200), kwargs=_pk("vote")),
    # Stored files (an export here; MEDIA_CASES spell paths every way)
    "media": Route(get=staff_api(200) | {ANONYMOUS: 403}, kwargs=lambda world: {"path": world.export.file.name}),
    "healthz": Route(get=everyone(200)),
    # Readiness names the infrastructure: staff (or the health token, tests/test_health.py)
    "healthz-ready": Route(get=staff_api(200) | {ANONYMOUS: 403}),
    "metrics": Route(get=staff_api(200) | {ANONYMOUS: 403}),
    # Staff pages
    "curation:home": Route(get=signed_in_pages(REDIRECT)),  # staff to experiments, raters to rating
    "curation:experiment-list": Route(get=staff_pages(200)),
    "curation:experiment-create": Route(get=staff_pages(200), post=staff_pages(400)),
    "curation:experiment-detail": Route(get=staff_pages(200), kwargs=_pk("experiment")),
    "curation:experiment-clone": Route(get=staff_pages(200), post=staff_pages(400), kwargs=_pk("experiment")),
    "curation:experiment-progress": Route(get=staff_pages(200), kwargs=_pk("experiment")),
    "curation:experiment-plot": Route(get=staff_pages(200), kwargs=_pk("experiment")),
    "curation:experiment-action": Route(get=staff_pages(405), post=staff_pages(REDIRECT),  # refused, with a message
                                        kwargs=lambda world: {"pk": world.draft.pk, "action": "pause"}),
    "curation:generation-detail": Route(get=staff_pages(200),
                                        kwargs=lambda world: {"pk": world.experiment.pk, "index": 0}),
    "curation:generation-examples": Route(
        get=staff_pages(200), kwargs=lambda world: {"pk": world.experiment.pk, "index": 0, "kind": "accepted"}),
    "curation:export-create": Route(get=staff_pages(405), post=staff_pages(REDIRECT), kwargs=_pk("experiment")),
    "curation:export-download": Route(get=staff_pages(200), kwargs=_pk("export")),
    "curation:dataset-list": Route(get=staff_pages(200), post=staff_pages(400)),
    "curation:study-list": Route(get=staff_pages(200)),
    "curation:study-detail": Route(get=staff_pages(200), kwargs=_pk("study")),
    "curation:study-progress": Route(get=staff_pages(200), kwargs=_pk("study")),
    "curation:study-plot": Route(get=staff_pages(200), kwargs=lambda world: {"pk": world.study.pk, "metric": "fd"}),
    # Rating: raters and staff; a paused rater is told so and gets nothing to rate
    "curation:rate": Route(get=rater_pages(rater=200, paused=200, staff=200)),
    "curation:grid": Route(get=rater_pages(rater=200, paused=403, staff=200),
                           post=rater_pages(rater=400, paused=frozenset({400, 403}), staff=400)),
    "curation:stats": Route(get=rater_pages(200)),
    "curation:api-next": Route(get=rater_json(rater=200, paused=403, staff=200)),
    "curation:api-vote": Route(get=everyone(405),
                               post=rater_json(rater=400, paused=frozenset({400, 403}), staff=400)),
    "curation:api-undo": Route(get=everyone(405),
                               post=rater_json(rater=400, paused=frozenset({400, 403}), staff=400)),
    "curation:api-skip": Route(get=everyone(405),
                               post=rater_json(rater=400, paused=frozenset({400, 403}), staff=400)),
    # The image of an item served to the rater, by its opaque token: nobody else's token works
    "curation:item-image": Route(get=rater_pages(rater=200, paused=404, staff=404),
                                 kwargs=lambda world: {"token": world.claim_token()}),
}


def admin_route(name: str | None, route: str) -> Route:
    """Every admin URL: strangers and every account that is not staff go to the admin's log-in.
    Staff get the page, a redirect (an object that does not exist sends them to its list), 404, or
    403 where the model's admin offers no such page (adding to, or changing, a log of events)."""
    staff = frozenset({200, REDIRECT, 403, 404})
    get = everyone(ADMIN_LOGIN) | {STAFF: staff}
    takes_writes = name is not None and name.endswith(("_add", "_change", "_delete", "password_change"))
    post = get if takes_writes else None
    if name == "admin:login":
        get = everyone(200) | {STAFF: REDIRECT}  # the form (saying who may enter), but staff are in already
        post = everyone(200)  # an empty form comes back with its errors
    elif name == "admin:logout":  # the admin sends non-staff to its index, which sends them to log in
        get, post = everyone(REDIRECT) | {STAFF: 405}, everyone(REDIRECT) | {STAFF: 200}
    elif name == "admin:autocomplete":  # staff asking for no field's choices are refused
        get = get | {STAFF: 403}
    return Route(get=get, post=post, kwargs=lambda world: admin_kwargs(world, route), signs_out=name == "admin:logout")


def admin_kwargs(world, route: str) -> dict:
    from django.apps import apps
    from django.contrib.contenttypes.models import ContentType

    values = {"app_label": "curation", "url": "no-such-page/", "id": world.users[STAFF].pk,
              "content_type_id": ContentType.objects.get_for_model(Experiment).pk, "object_id": world.experiment.pk}
    model_route = re.match(r"admin/(\w+)/(\w+)/<", route)
    if model_route:
        first = apps.get_model(*model_route.groups()).objects.order_by("pk").first()
        values["object_id"] = first.pk if first is not None else 0
    return values


# --- media: every spelling of a path -------------------------------------------------------------

STAFF_FILE = dict.fromkeys(NOT_STAFF, 403) | {STAFF: 200, STAFF_TOKEN: 200}
NO_SUCH_FILE = everyone(404) | {ANONYMOUS: 403}  # a path that is absolute or climbs out


def media_cases(world) -> list[tuple[str, str, dict]]:
    cases = []
    for what, name in (("an export", world.export.file.name), ("a gold image", world.gold.image.name)):
        first, _, rest = name.partition("/")
        cases += [
            (f"{what}, plainly", f"/media/{name}", STAFF_FILE),
            (f"{what}, after ./", f"/media/./{name}", STAFF_FILE),
            (f"{what}, after %2e/", f"/media/%2e/{name}", STAFF_FILE),
            (f"{what}, after %252e/ (encoded twice)", f"/media/%252e/{name}", STAFF_FILE),
            (f"{what}, after a/../", f"/media/a/../{name}", STAFF_FILE),
            (f"{what}, through its folder and back", f"/media/{first}/../{first}/{rest}", STAFF_FILE),
            (f"{what}, with %2f for its slash", f"/media/{first}%252f{rest}", STAFF_FILE),
            (f"{what}, after //", f"/media//{name}", NO_SUCH_FILE),
            (f"{what}, climbing out first", f"/media/../media/{name}", NO_SUCH_FILE),
            (f"{what}, with a NUL byte", f"/media/{name}%00", NO_SUCH_FILE),
        ]
    return cases + [
        ("a sample's image", f"/media/{world.sample.image.name}", STAFF_FILE),
        ("a generation's grid", f"/media/{world.generation.grid_image.name}", STAFF_FILE),
        ("a real image", f"/media/{world.real_image.image.name}", STAFF_FILE),
        ("the settings, climbing out", "/media/../config/settings.py", NO_SUCH_FILE),
        ("the settings, climbing out encoded", "/media/%2e%2e/config/settings.py", NO_SUCH_FILE),
        ("nothing", "/media/exports/0/none.zip", dict.fromkeys(NOT_STAFF, 403) | {STAFF: 404, STAFF_TOKEN: 404}),
    ]


# Other requests the URL configuration does not show: query strings that change what a route reads.
def query_cases(world) -> list[tuple[str, str, dict]]:
    return [
        ("an experiment's real images", f"/api/samples/?source=real&experiment={world.experiment.pk}", staff_api(200)),
        ("accepted samples", f"/api/samples/?accepted=true&experiment={world.experiment.pk}", staff_api(200)),
        ("an experiment's generations", f"/api/generations/?experiment={world.experiment.pk}", staff_api(200)),
    ]


# --- the URL configuration ----------------------------------------------------------------------

PARAMETER = re.compile(r"<(?:[^>:]+:)?(?P<name>[^>]+)>")


@dataclass(frozen=True)
class Pattern:
    name: str | None  # with its namespace, e.g. "curation:rate" or "admin:index"
    route: str  # as Django reports it in ResolverMatch.route
    chain: tuple  # the resolvers and the pattern, outermost first

    @property
    def parameters(self) -> set[str]:
        names = set()
        for entry in self.chain:
            pattern = entry.pattern
            names |= set(pattern.converters) if isinstance(pattern, RoutePattern) else set(pattern.regex.groupindex)
        return names

    def path(self, values: dict) -> str:
        """A path that resolves to this pattern, its parameters filled from `values`."""
        parts = []
        for entry in self.chain:
            pattern = entry.pattern
            if isinstance(pattern, RoutePattern):
                parts.append(PARAMETER.sub(lambda m: pattern.converters[m["name"]].to_url(str(values[m["name"]])),
                                           str(pattern)))
            else:
                template, names = normalize(pattern.regex.pattern)[0]
                parts.append(template % {name: values[name] for name in names})
        return "/" + "".join(parts)


def url_patterns(resolver=None, chain=(), namespace=()) -> list[Pattern]:
    found = []
    for entry in (resolver or get_resolver()).url_patterns:
        if isinstance(entry, URLResolver):
            found += url_patterns(entry, chain + (entry,), namespace + ((entry.namespace,) if entry.namespace else ()))
        else:
            route = ""
            for part in chain + (entry,):
                route = route + str(part.pattern).removeprefix("^") if route else str(part.pattern)
            name = ":".join(namespace + (entry.name,)) if entry.name else None
            found.append(Pattern(name=name, route=route, chain=chain + (entry,)))
    return found


def specification(pattern: Pattern) -> Route | None:
    """This pattern's entry: the admin's rule, a format-suffix twin's route, or the table's entry."""
    if pattern.route.startswith("admin/"):
        return admin_route(pattern.name, pattern.route)
    entry = ROUTES.get(pattern.name)
    if entry is not None and "format" in pattern.parameters:
        return replace(entry, kwargs=lambda world, base=entry.kwargs: base(world) | {"format": "json"})
    return entry


def requests(world) -> list[tuple[str, str, str, dict]]:
    """Every cell's row: (what, method, path, expected status by role, whether it signs out)."""
    rows = []
    for pattern in url_patterns():
        entry = specification(pattern)
        assert entry is not None, f"{pattern.name or pattern.route} has no entry in the permission table"
        path = pattern.path(entry.kwargs(world)) + entry.query
        matched = resolve(path.split("?")[0])
        assert matched.route == pattern.route, f"{path} resolves to {matched.route}, not {pattern.route}"
        what = f"{pattern.name or pattern.route} ({path})"
        rows.append((what, "GET", path, entry.get, entry.signs_out))
        if entry.post is not None:
            rows.append((what, "POST", path, entry.post, entry.signs_out))
    for what, path, expected in media_cases(world) + query_cases(world):
        rows.append((f"{what} ({path})", "GET", path, expected, False))
    return rows


# --- the world they visit -----------------------------------------------------------------------


def api_token(user) -> str:
    """A new API token for `user`, made as the project makes them (knox's hashed ones, or DRF's)."""
    from django.apps import apps

    if apps.is_installed("knox"):
        from knox.models import AuthToken

        return AuthToken.objects.create(user)[1]
    from rest_framework.authtoken.models import Token

    return Token.objects.get_or_create(user=user)[0].key


def _study() -> Study:
    """A study of one experiment, with its G0 finished (so that its page has figures and plots)."""
    plan = StudyPlan(base=preset("digits-tiny"), variants=(Variant("fully-synthetic", "none"),), seeds=(0,),
                     generations=2, reservoir=0)
    study = Study.objects.create(name="study", plan=plan.to_dict())
    experiment = create_experiment(name="study run", config=preset("digits-tiny"))
    Experiment.objects.filter(pk=experiment.pk).update(study=study, study_variant="fully-synthetic/none", study_seed=0)
    Generation.objects.create(experiment=experiment, index=0, state=Generation.State.DONE,
                              metrics={"fd": 2.0, "precision": 0.9, "recall": 0.9, "coverage": 0.9})
    return study


def build_world() -> SimpleNamespace:
    generation = open_generation(preset("digits-tiny"), samples=8, votes_needed=2, gold_rate=0.2)
    experiment = generation.experiment
    generation.samples.filter(index__lt=4).update(accepted=True, discriminator_score=0.9)
    generation.samples.filter(index__gte=4).update(accepted=False, discriminator_score=0.1)
    grid = media.write(f"experiments/{experiment.pk}/g000/grid.png", encode_png(np.zeros((1, 8, 8), np.float32)))
    Generation.objects.filter(pk=generation.pk).update(grid_image=grid, metrics={"fd": 12.5, "precision": 0.5})
    generation.refresh_from_db()
    export = Export.objects.create(experiment=experiment, format=Export.Format.HF, status=Export.Status.DONE)
    export.file = media.write(f"exports/{export.pk}/curated.zip", b"PK\x05\x06" + bytes(18))
    export.save()

    users = {}
    users[NON_RATER] = get_user_model().objects.create_user("visitor")
    rater = human_rater("rita")
    users[RATER] = rater.user
    paused = human_rater("paula")
    Rater.objects.filter(pk=paused.pk).update(active=False, paused_reason="failed the quality checks")
    users[PAUSED] = paused.user
    users[STAFF] = get_user_model().objects.create_user("chief", is_staff=True, is_superuser=True)
    sample = generation.samples.order_by("index").first()

    def claim_token() -> str:
        """The opaque token of an item served to the rater (made when the route needing it exists)."""
        from curation import rating
        from curation.models import Claim

        rating.next_items(rater=rater, count=2)
        return Claim.objects.filter(rater=rater).order_by("pk").first().token

    return SimpleNamespace(
        users=users,
        study=_study(),
        token_users={RATER_TOKEN: users[RATER], STAFF_TOKEN: users[STAFF]},
        experiment=experiment,
        draft=create_experiment(name="draft", config=preset("digits-tiny")),
        generation=generation,
        sample=sample,
        vote=Vote.objects.create(rater=rater, sample=sample, generation=sample.generation, up=True),
        gold=experiment.gold_items.order_by("pk").first(),
        real_image=experiment.dataset.images.order_by("index").first(),
        export=export,
        claim_token=claim_token,
    )


@pytest.fixture(scope="module")
def world(django_db_setup, django_db_blocker, media_root, tmp_path_factory):
    """One world for every role's test: made once, inside a transaction rolled back at the end. Its
    files are kept aside and put back before each test (the suite clears experiment files after each)."""
    kept = tmp_path_factory.mktemp("permission-media")
    with django_db_blocker.unblock(), transaction.atomic():
        world = build_world()
        for folder in ("experiments", "exports"):
            shutil.copytree(media_root / folder, kept / folder)
        world.kept_media = kept
        yield world
        transaction.set_rollback(True)


@pytest.fixture
def media_files(world, media_root):
    for folder in ("experiments", "exports"):
        shutil.copytree(world.kept_media / folder, media_root / folder, dirs_exist_ok=True)


def client_for(world, role: str) -> Client:
    client = Client()
    if role in world.users:
        client.force_login(world.users[role])
    elif role in world.token_users:
        client.defaults["HTTP_AUTHORIZATION"] = f"Token {api_token(world.token_users[role])}"
    return client


def observed(response):
    if 300 <= response.status_code < 400:
        location = response["Location"]
        if location.startswith("/admin/login/"):
            return ADMIN_LOGIN
        if location.startswith(settings.LOGIN_URL):
            return LOGIN
        return REDIRECT
    return response.status_code


# --- the tests ----------------------------------------------------------------------------------


def test_every_url_pattern_has_an_entry_in_the_permission_table():
    patterns = url_patterns()
    missing = [p.name or p.route for p in patterns if specification(p) is None]
    assert not missing, "URL patterns without an entry in tests/test_permissions.py: " + ", ".join(missing)
    assert sum(p.route.startswith("admin/") for p in patterns) > 20  # the admin is walked, not listed


def test_every_entry_in_the_permission_table_is_a_route():
    named = {p.name for p in url_patterns()}
    stale = sorted(set(ROUTES) - named)
    assert not stale, "entries for routes the URL configuration does not have: " + ", ".join(stale)


@pytest.mark.parametrize("role", ROLES)
def test_each_role_gets_exactly_what_the_table_allows(world, media_files, role):
    cache.clear()  # throttles and lockouts count per test, not across the session
    client = client_for(world, role)
    wrong = []
    for what, method, path, expected, signs_out in requests(world):
        response = client.get(path) if method == "GET" else client.post(path)
        allowed = expected[role] if isinstance(expected[role], frozenset) else {expected[role]}
        if observed(response) not in allowed:
            wrong.append(f"{method} {what}: expected {' or '.join(map(str, allowed))}, got {observed(response)}")
        if signs_out:
            client = client_for(world, role)
    assert not wrong, f"{len(wrong)} answers to the {role} break the permission table:\n" + "\n".join(wrong)


def test_the_matrix_covers_every_role_for_every_request(world, media_files):
    rows = requests(world)
    cells = sum(len(expected) for _, _, _, expected, _ in rows)
    assert all(set(expected) == set(ROLES) for _, _, _, expected, _ in rows)
    assert cells == len(rows) * len(ROLES) and cells > 1000, cells
