"""How requests authenticate: an API token (DEFAULT_AUTHENTICATION_CLASSES, and the media view), or a
session whose user is loaded with its rater (AUTHENTICATION_BACKENDS). Kept apart from the token
views: DRF imports this while it is still importing its own views."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from knox import auth
from rest_framework import exceptions

UserModel = get_user_model()


class TokenAuthentication(auth.TokenAuthentication):
    """knox's: `Authorization: Token <key>`, checked against the stored hash and expiry. A key that is
    not even text is refused like any other wrong key (knox would fail on it with a server error)."""

    def authenticate_credentials(self, token: bytes):
        try:
            token.decode("utf-8")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("Invalid token.") from None
        return super().authenticate_credentials(token)


class UserWithRaterBackend(ModelBackend):
    """Django's password backend, loading a signed-in user's rater with the user in one query: every
    rating request needs both, and the rating page's fetch must stay within a few queries."""

    def get_user(self, user_id):
        user = UserModel._default_manager.select_related("rater").filter(pk=user_id).first()
        return user if user is not None and self.user_can_authenticate(user) else None
