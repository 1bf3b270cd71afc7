from django.urls import path

from curation import views

app_name = "curation"
urlpatterns = [
    path("", views.experiment_list, name="experiment-list"),
    path("experiments/<int:pk>/", views.experiment_detail, name="experiment-detail"),
    path("experiments/<int:pk>/progress.json", views.experiment_progress, name="experiment-progress"),
]
