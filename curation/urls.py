from django.urls import path

from curation import rating_views, views

app_name = "curation"
urlpatterns = [
    path("", rating_views.home, name="home"),
    path("experiments/", views.experiment_list, name="experiment-list"),
    path("experiments/new/", views.experiment_create, name="experiment-create"),
    path("experiments/<int:pk>/", views.experiment_detail, name="experiment-detail"),
    path("experiments/<int:pk>/clone/", views.experiment_clone, name="experiment-clone"),
    path("experiments/<int:pk>/progress.json", views.experiment_progress, name="experiment-progress"),
    path("experiments/<int:pk>/metrics.png", views.experiment_plot, name="experiment-plot"),
    path("experiments/<int:pk>/actions/<str:action>/", views.experiment_action, name="experiment-action"),
    path("experiments/<int:pk>/g/<int:index>/", views.generation_detail, name="generation-detail"),
    path("experiments/<int:pk>/g/<int:index>/<str:kind>.png", views.generation_examples, name="generation-examples"),
    path("experiments/<int:pk>/exports/", views.export_create, name="export-create"),
    path("exports/<int:pk>/download/", views.export_download, name="export-download"),
    path("studies/", views.study_list, name="study-list"),
    path("studies/<int:pk>/", views.study_detail, name="study-detail"),
    path("studies/<int:pk>/progress.json", views.study_progress_json, name="study-progress"),
    path("studies/<int:pk>/<str:metric>.png", views.study_plot, name="study-plot"),
    path("datasets/", views.dataset_list, name="dataset-list"),
    path("rate/", rating_views.rate_page, name="rate"),
    path("rate/grid/", rating_views.grid, name="grid"),
    path("rate/stats/", rating_views.stats, name="stats"),
    path("rate/api/next", rating_views.api_next, name="api-next"),
    path("rate/api/vote", rating_views.api_vote, name="api-vote"),
    path("rate/api/undo", rating_views.api_undo, name="api-undo"),
    path("rate/api/skip", rating_views.api_skip, name="api-skip"),
    path("rate/image/<str:token>", rating_views.item_image, name="item-image"),
]
