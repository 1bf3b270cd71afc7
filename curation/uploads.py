"""Who may send files, and how large: the first of the upload handlers (FILE_UPLOAD_HANDLERS).

Django parses a request body lazily, when something first reads request.POST or request.FILES, and
the CSRF check reads it before any view's own permission check. So the rule sits here, where the
parsing happens: files are taken only from staff (their one upload is a dataset archive), and only
in a body of at most DATASET_UPLOAD_MAX_BYTES; anyone else's file stops the upload before a byte of
it is stored in memory or in a temporary file.
"""

from __future__ import annotations

from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler, StopUpload


def upload_too_large(request) -> bool:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0) > settings.DATASET_UPLOAD_MAX_BYTES
    except ValueError:
        return True


class StaffUploadsOnly(FileUploadHandler):
    def handle_raw_input(self, input_data, META, content_length, boundary, encoding=None):
        user = getattr(self.request, "user", None)
        staff = user is not None and user.is_authenticated and user.is_staff
        self.refused = not staff or content_length > settings.DATASET_UPLOAD_MAX_BYTES
        self.received = 0

    def new_file(self, *args, **kwargs):
        if self.refused:
            raise StopUpload(connection_reset=True)
        super().new_file(*args, **kwargs)

    def receive_data_chunk(self, raw_data, start):
        self.received += len(raw_data)
        if self.received > settings.DATASET_UPLOAD_MAX_BYTES:
            raise StopUpload(connection_reset=True)
        return raw_data  # on to the handlers that store it

    def file_complete(self, file_size):
        return None

