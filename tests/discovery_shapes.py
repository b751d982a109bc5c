"""Discovery documents in the shapes issuers serve them, for the bake's issuer detection.

Each shape is a function of the issuer's origin (``https://host`` in unit tests,
``http://127.0.0.1:<port>`` when served for real), returning the issuer URL and
the document as that issuer lays it out: the same paths and the members that
tell one issuer from another (Keycloak's ``/protocol/openid-connect/``,
Zitadel's ``urn:zitadel:`` claims, Entra's ``cloud_instance_name``, Auth0's
``mfa_challenge_endpoint``, Okta's ``/v1/keys``, Kinde's
``/oauth2/v2/user_profile``, Logto's ``urn:logto:`` scopes, Firebase's
securetoken service account). Other members are trimmed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Shape = Callable[[str], tuple[str, dict[str, Any]]]

ENTRA_TENANT = "9188040d-6c67-4c5b-b112-36a304b66dad"
FIREBASE_PROJECT = "acme-prod"
STYTCH_PROJECT = "project-test-11111111-2222-3333-4444-555555555555"
WORKOS_CLIENT = "client_01HXYZABCDEF"
DESCOPE_PROJECT = "P2abcDEFghiJKLmnoPQRstu"


def keycloak(origin: str) -> tuple[str, dict[str, Any]]:
    issuer = f"{origin}/realms/acme"
    oidc = f"{issuer}/protocol/openid-connect"
    return issuer, {
        "issuer": issuer,
        "authorization_endpoint": f"{oidc}/auth",
        "token_endpoint": f"{oidc}/token",
        "introspection_endpoint": f"{oidc}/token/introspect",
        "userinfo_endpoint": f"{oidc}/userinfo",
        "end_session_endpoint": f"{oidc}/logout",
        "jwks_uri": f"{oidc}/certs",
        "check_session_iframe": f"{oidc}/login-status-iframe.html",
        "revocation_endpoint": f"{oidc}/revoke",
        "grant_types_supported": ["authorization_code", "refresh_token", "password"],
        "scopes_supported": ["openid", "profile", "email", "roles", "organization"],
    }


def zitadel(origin: str) -> tuple[str, dict[str, Any]]:
    # A self-hosted Zitadel: its issuer is its bare origin.
    return origin, {
        "issuer": origin,
        "authorization_endpoint": f"{origin}/oauth/v2/authorize",
        "token_endpoint": f"{origin}/oauth/v2/token",
        "introspection_endpoint": f"{origin}/oauth/v2/introspect",
        "userinfo_endpoint": f"{origin}/oidc/v1/userinfo",
        "revocation_endpoint": f"{origin}/oauth/v2/revoke",
        "end_session_endpoint": f"{origin}/oidc/v1/end_session",
        "device_authorization_endpoint": f"{origin}/oauth/v2/device_authorization",
        "jwks_uri": f"{origin}/oauth/v2/keys",
        "scopes_supported": ["openid", "profile", "email", "phone", "address", "offline_access"],
        "claims_supported": [
            "sub",
            "aud",
            "exp",
            "iat",
            "iss",
            "auth_time",
            "nonce",
            "acr",
            "amr",
            "c_hash",
            "at_hash",
            "act",
            "scopes",
            "client_id",
            "azp",
            "preferred_username",
            "name",
            "email",
            "email_verified",
            "urn:zitadel:iam:org:domain:primary:{domainname}",
            "urn:zitadel:iam:org:project:roles",
            "urn:zitadel:iam:user:metadata",
            "urn:zitadel:iam:user:resourceowner:id",
        ],
    }


def auth0(origin: str) -> tuple[str, dict[str, Any]]:
    # A custom domain: Auth0's issuer ends with a slash.
    issuer = f"{origin}/"
    return issuer, {
        "issuer": issuer,
        "authorization_endpoint": f"{origin}/authorize",
        "token_endpoint": f"{origin}/oauth/token",
        "device_authorization_endpoint": f"{origin}/oauth/device/code",
        "userinfo_endpoint": f"{origin}/userinfo",
        "mfa_challenge_endpoint": f"{origin}/mfa/challenge",
        "jwks_uri": f"{origin}/.well-known/jwks.json",
        "registration_endpoint": f"{origin}/oidc/register",
        "revocation_endpoint": f"{origin}/oauth/revoke",
        "end_session_endpoint": f"{origin}/oidc/logout",
        "scopes_supported": ["openid", "profile", "offline_access", "email"],
    }


def okta(origin: str) -> tuple[str, dict[str, Any]]:
    issuer = f"{origin}/oauth2/default"
    return issuer, {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/v1/authorize",
        "token_endpoint": f"{issuer}/v1/token",
        "userinfo_endpoint": f"{issuer}/v1/userinfo",
        "registration_endpoint": f"{origin}/oauth2/v1/clients",
        "jwks_uri": f"{issuer}/v1/keys",
        "end_session_endpoint": f"{issuer}/v1/logout",
        "revocation_endpoint": f"{issuer}/v1/revoke",
        "introspection_endpoint": f"{issuer}/v1/introspect",
        "request_parameter_supported": True,
    }


def entra(origin: str) -> tuple[str, dict[str, Any]]:
    issuer = f"{origin}/{ENTRA_TENANT}/v2.0"
    return issuer, {
        "issuer": issuer,
        "token_endpoint": f"{origin}/{ENTRA_TENANT}/oauth2/v2.0/token",
        "authorization_endpoint": f"{origin}/{ENTRA_TENANT}/oauth2/v2.0/authorize",
        "jwks_uri": f"{origin}/{ENTRA_TENANT}/discovery/v2.0/keys",
        "end_session_endpoint": f"{origin}/{ENTRA_TENANT}/oauth2/v2.0/logout",
        "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
        "tenant_region_scope": "EU",
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
        "rbac_url": "https://pas.windows.net",
    }


def firebase(origin: str) -> tuple[str, dict[str, Any]]:
    # securetoken.google.com/<project>; the keys live on www.googleapis.com.
    issuer = f"{origin}/{FIREBASE_PROJECT}"
    return issuer, {
        "issuer": issuer,
        "jwks_uri": f"{origin}/service_accounts/v1/jwk/securetoken@system.gserviceaccount.com",
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    }


def supabase(origin: str) -> tuple[str, dict[str, Any]]:
    issuer = f"{origin}/auth/v1"
    return issuer, {
        "issuer": issuer,
        "jwks_uri": f"{issuer}/.well-known/jwks.json",
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256", "RS256"],
    }


def kinde(origin: str) -> tuple[str, dict[str, Any]]:
    # A custom domain: the host says nothing, the userinfo path does.
    return origin, {
        "issuer": origin,
        "authorization_endpoint": f"{origin}/oauth2/auth",
        "token_endpoint": f"{origin}/oauth2/token",
        "userinfo_endpoint": f"{origin}/oauth2/v2/user_profile",
        "end_session_endpoint": f"{origin}/logout",
        "revocation_endpoint": f"{origin}/oauth2/revoke",
        "jwks_uri": f"{origin}/.well-known/jwks",
    }


def logto(origin: str) -> tuple[str, dict[str, Any]]:
    issuer = f"{origin}/oidc"
    return issuer, {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/auth",
        "token_endpoint": f"{issuer}/token",
        "userinfo_endpoint": f"{issuer}/me",
        "end_session_endpoint": f"{issuer}/session/end",
        "revocation_endpoint": f"{issuer}/token/revocation",
        "jwks_uri": f"{issuer}/jwks",
        "scopes_supported": [
            "openid",
            "offline_access",
            "profile",
            "email",
            "roles",
            "urn:logto:scope:organizations",
            "urn:logto:scope:organization_roles",
        ],
    }


def cognito(origin: str) -> tuple[str, dict[str, Any]]:
    issuer = f"{origin}/eu-west-1_AbCdEf123"
    return issuer, {
        "issuer": issuer,
        "authorization_endpoint": f"{origin}/oauth2/authorize",
        "jwks_uri": f"{issuer}/.well-known/jwks.json",
        "token_endpoint": f"{origin}/oauth2/token",
        "userinfo_endpoint": f"{origin}/oauth2/userInfo",
        "response_types_supported": ["code", "token"],
        "subject_types_supported": ["public"],
    }


def plain(origin: str) -> tuple[str, dict[str, Any]]:
    """An issuer with nothing to recognise it by (jwtedge's own DevIssuer lays out like this)."""
    return origin, {
        "issuer": origin,
        "jwks_uri": f"{origin}/jwks",
        "authorization_endpoint": f"{origin}/authorize",
        "token_endpoint": f"{origin}/token",
    }


#: Shapes recognised from their discovery document or their path alone, so
#: they are recognised on 127.0.0.1 too: name -> (shape, profile).
RECOGNISED_ON_LOOPBACK: dict[str, tuple[Shape, str]] = {
    "keycloak": (keycloak, "keycloak"),
    "zitadel": (zitadel, "zitadel"),
    "auth0": (auth0, "auth0"),
    "okta": (okta, "okta"),
    "entra": (entra, "entra"),
    "firebase": (firebase, "firebase"),
    "supabase": (supabase, "supabase"),
    "kinde": (kinde, "kinde"),
    "logto": (logto, "logto"),
}
