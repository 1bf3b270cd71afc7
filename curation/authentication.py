"""How requests authenticate: an API token (DEFAULT_AUTHENTICATION_CLASSES, and the media view), or a
session whose user is loaded with its rater (AUTHENTICATION_BACKENDS). Kept apart from the token
views: DRF imports this while it is still importing its own views."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import ValidationError
from django.db import connection
from knox import auth
from rest_framework import exceptions

from curation import sql

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


def session_or_token_user(request):
    """The request's user: its session's, else the owner of a valid API token it sends (plain Django
    views, which DRF's authentication does not reach), else the anonymous user."""
    user = getattr(request, "user", None) or AnonymousUser()
    if user.is_authenticated:
        return user
    try:
        found = TokenAuthentication().authenticate(request)
    except exceptions.AuthenticationFailed:
        found = None
    return found[0] if found else user


class UserWithRaterBackend(ModelBackend):
    """Django's password backend, loading a signed-in user's rater with the user in one statement:
    every rating request needs both. In plain SQL: the ORM's compilation of this one query (with its
    join) took longer than a whole vote's own work."""

    def get_user(self, user_id):
        try:
            user_id = UserModel._meta.pk.to_python(user_id)
        except ValidationError:
            return None
        user = _user_with_rater(user_id)
        return user if user is not None and self.user_can_authenticate(user) else None


def _user_with_rater(user_id):
    from curation.models import Rater

    quote = connection.ops.quote_name
    link = Rater._meta.get_field("user").column
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {sql.columns(UserModel, 'u')}, {sql.columns(Rater, 'r')} FROM {quote(UserModel._meta.db_table)} u "
            f"LEFT JOIN {quote(Rater._meta.db_table)} r ON r.{quote(link)} = u.{quote(UserModel._meta.pk.column)} "
            f"WHERE u.{quote(UserModel._meta.pk.column)} = %s",
            [user_id],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    split = len(UserModel._meta.concrete_fields)
    user = sql.from_row(UserModel, row[:split])
    rater = sql.from_row(Rater, row[split:]) if row[split] is not None else None
    # Cached as select_related would: `user.rater` without a query (or DoesNotExist without one).
    UserModel.rater.related.set_cached_value(user, rater)
    if rater is not None:
        Rater.user.field.set_cached_value(rater, user)
    return user
