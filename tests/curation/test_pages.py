"""Staff pages: the experiment list, detail and live-progress JSON; raters and strangers kept out."""

import pytest
from django.contrib.auth import get_user_model

from curation.services import create_experiment, start_experiment

pytestmark = pytest.mark.django_db


@pytest.fixture
def experiment(tiny_config):
    experiment = create_experiment(name="pages", config=tiny_config)
    start_experiment(experiment=experiment)
    return experiment


@pytest.fixture
def staff_client(client):
    user = get_user_model().objects.create_user("staff", password="pw", is_staff=True)
    client.force_login(user)
    return client


def test_staff_see_experiments_and_their_generations(staff_client, experiment):
    assert staff_client.get("/")["Location"] == "/experiments/"
    assert "pages" in staff_client.get("/experiments/").content.decode()
    page = staff_client.get(f"/experiments/{experiment.pk}/").content.decode()
    assert "G0" in page and "pending" in page


def test_progress_json_reports_each_generation(staff_client, experiment):
    data = staff_client.get(f"/experiments/{experiment.pk}/progress.json").json()
    assert data["status"] == "running"
    assert data["generations"][0]["state"] == "pending"
    assert data["generations"][0]["report"]["train_real"] == 300


def test_anonymous_visitors_are_sent_to_log_in(client, experiment):
    response = client.get(f"/experiments/{experiment.pk}/")
    assert response.status_code == 302 and "login" in response["Location"]


def test_the_login_page_renders(client):
    assert "Log in" in client.get("/accounts/login/").content.decode()


def test_the_admin_lists_searches_and_filters_every_model(client, experiment):
    from django.contrib import admin

    from curation import pipeline

    pipeline.run_generation(experiment.generations.get().pk)
    user = get_user_model().objects.create_superuser("root", password="pw")
    client.force_login(user)
    models = [m for m in admin.site._registry if m._meta.app_label == "curation"]
    assert len(models) == 13
    for model in models:
        model_admin = admin.site._registry[model]
        url = f"/admin/curation/{model._meta.model_name}/"
        assert client.get(url).status_code == 200, url
        if model_admin.search_fields:
            assert client.get(url, {"q": "pages"}).status_code == 200, url
        assert model_admin.list_display != ("__str__",), f"{model.__name__} has no useful columns"
    page = client.get("/admin/curation/experiment/").content.decode()
    assert "augmentation" in page and f"/experiments/{experiment.pk}/" in page


def test_pages_read_without_writing(staff_client, media_root):
    """Showing the experiment form or the dataset list stores nothing: the built-in digits are stored
    when an experiment first uses them."""
    from curation.models import RealDataset, RealImage

    RealImage.objects.all().delete()
    RealDataset.objects.all().delete()
    for url in ("/experiments/new/", "/datasets/"):
        assert staff_client.get(url).status_code == 200
    assert not RealDataset.objects.exists()
    assert "stored when an experiment first uses it" in staff_client.get("/datasets/").content.decode()
