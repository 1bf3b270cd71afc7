from django.urls import path

from curation import rating_views, views

app_name = "curation"
urlpatterns = [
    path("", rating_views.home, name="home"),
    path("experiments/", views.experiment_list, name="experiment-list"),
    path("experiments/<int:pk>/", views.experiment_detail, name="experiment-detail"),
    path("experiments/<int:pk>/progress.json", views.experiment_progress, name="experiment-progress"),
    path("rate/", rating_views.rate_page, name="rate"),
    path("rate/grid/", rating_views.grid, name="grid"),
    path("rate/stats/", rating_views.stats, name="stats"),
    path("rate/api/next", rating_views.api_next, name="api-next"),
    path("rate/api/vote", rating_views.api_vote, name="api-vote"),
    path("rate/api/undo", rating_views.api_undo, name="api-undo"),
]
