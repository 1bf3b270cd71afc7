"""Signing in: the lockout after repeated wrong passwords (django-axes, on the login page and the
token endpoint alike), and API tokens, issued for a username and password, stored hashed
(django-rest-knox), expiring after API_TOKEN_DAYS, revocable."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import authenticate
from django.shortcuts import render
from drf_spectacular.contrib.knox_auth_token import KnoxTokenScheme
from drf_spectacular.utils import extend_schema, inline_serializer
from knox.views import LoginView, LogoutAllView, LogoutView
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle

from curation.authentication import TokenAuthentication

LOCKED_OUT = 429


def lockout_message() -> str:
    minutes = round(settings.AXES_COOLOFF_TIME.total_seconds() / 60)
    return (f"Too many failed sign-ins: this account is locked from your address for {minutes} minutes "
            f"after {settings.AXES_FAILURE_LIMIT} wrong passwords in a row. Try again later, or ask staff to unlock it.")


def locked_out(request, original_response=None, credentials=None):
    """Axes' answer to a locked-out sign-in on the login page (AXES_LOCKOUT_CALLABLE)."""
    return render(request, "registration/locked_out.html", {"message": lockout_message()}, status=LOCKED_OUT)


class TokenScheme(KnoxTokenScheme):
    """The OpenAPI schema's name for our token authentication: knox's `Authorization: Token <key>`."""

    target_class = "curation.authentication.TokenAuthentication"
    name = "tokenAuth"


class Credentials(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=4096, trim_whitespace=False, style={"input_type": "password"})


IssuedToken = inline_serializer("IssuedToken", {
    "token": serializers.CharField(help_text="Send it as `Authorization: Token <token>`; shown only this once."),
    "expiry": serializers.DateTimeField(help_text="When the token stops working (API_TOKEN_DAYS after issue)."),
})


class IssueToken(LoginView):
    """A new API token for a username and password. Requests are throttled per client address, and
    wrong passwords count towards the same lockout as the login page's."""

    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "api-token"

    @extend_schema(request=Credentials, responses={200: IssuedToken}, auth=[])
    def post(self, request, format=None):
        credentials = Credentials(data=request.data)
        credentials.is_valid(raise_exception=True)
        # The DRF request, not the Django one: axes marks a lockout on it, and the answer is this JSON,
        # not the login page that its middleware would put in place of a marked Django request.
        user = authenticate(request=request, **credentials.validated_data)
        if user is None:
            if getattr(request, "axes_locked_out", False):
                return Response({"detail": lockout_message()}, status=LOCKED_OUT)
            raise serializers.ValidationError({"non_field_errors": ["Unable to log in with provided credentials."]})
        request.user = user
        return super().post(request, format)


@extend_schema(request=None, responses={204: None})
class RevokeToken(LogoutView):
    """Revoke the token that authenticates this request."""

    authentication_classes = [TokenAuthentication]


@extend_schema(request=None, responses={204: None})
class RevokeAllTokens(LogoutAllView):
    """Revoke every token of the account that this request's token belongs to."""

    authentication_classes = [TokenAuthentication]
