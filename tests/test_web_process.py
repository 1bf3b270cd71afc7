"""The web process never loads torch or diffusers: they belong to the workers. (Loading torch made the
first request of every web worker take about 5 s and cost each worker hundreds of MB.)"""

import pytest

from tests.test_settings import PRODUCTION, run

LOAD_THE_APP_AND_EVERY_VIEW = """
import sys
from config.wsgi import application
from django.urls import URLResolver, get_resolver

def callbacks(resolver):
    for pattern in resolver.url_patterns:
        if isinstance(pattern, URLResolver):
            yield from callbacks(pattern)
        else:
            yield pattern.callback  # imports the view's module

views = list(callbacks(get_resolver()))
print(len(views), "views;", "loaded:", *sorted(m for m in ("torch", "diffusers") if m in sys.modules))
"""


@pytest.mark.parametrize("environment", [{}, PRODUCTION], ids=["embedded", "production"])
def test_the_wsgi_app_and_every_view_load_without_torch(environment):
    result = run(LOAD_THE_APP_AND_EVERY_VIEW, DJANGO_SETTINGS_MODULE="config.settings", **environment)
    assert result.returncode == 0, result.stderr
    count, loaded = result.stdout.strip().split(" views; loaded:")
    assert int(count) > 20  # the walk reached the app's pages, the API and the admin
    assert loaded.split() == []


def test_the_check_sees_torch_when_something_the_web_loads_imports_it():
    # The loop's steps need torch: a view that imported them at module level would fail the test above.
    code = LOAD_THE_APP_AND_EVERY_VIEW.replace("views = list", "import curation.pipeline\nviews = list")
    result = run(code, DJANGO_SETTINGS_MODULE="config.settings")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("loaded:")[1].split() == ["diffusers", "torch"]
