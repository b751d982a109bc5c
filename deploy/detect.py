"""Recognise an issuer from its URL and its discovery document: which profile, which settings.

The bake knows the issuer URL and (unless ``--jwks-url`` skipped it) the
discovery document, and that is enough to name most issuers: a SaaS issuer by
its host (``*.clerk.accounts.dev``, ``*.kinde.com``, ``securetoken.google.com``
…), a self-hosted one by its path (Keycloak's ``/realms/<realm>``, Supabase's
``/auth/v1``) or by what only its discovery document says (Zitadel's
``urn:zitadel:`` scopes, Keycloak's ``/protocol/openid-connect/`` endpoints,
Auth0's ``mfa_challenge_endpoint``…). Host and path rules come first: a
discovery document is the issuer's own word, a host is ours.

Everything here is pure: no I/O, no printing. The document is untrusted JSON,
so every member is type-checked before it is looked at.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "PROFILES",
    "PROFILE_VAR",
    "Detection",
    "Setting",
    "describe",
    "detect",
    "match_discovery",
    "match_url",
]

PROFILE_VAR = "APP_CONFIG_CLAIMS__PROFILE"
_AUDIENCE = "APP_CONFIG_AUTH__AUDIENCE"
_AUDIENCE_CLAIM = "APP_CONFIG_AUTH__AUDIENCE_CLAIM"

_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)
_COGNITO_HOST = re.compile(r"^cognito-idp(-fips)?\.[a-z]{2}(-[a-z]+)+-\d\.amazonaws\.com$")
# Suffixes, not whole paths: a reverse proxy may mount either under a prefix
# (Keycloak before 17 lived under /auth).
_KEYCLOAK_PATH = re.compile(r"(?:^|/)realms/([^/]+)/?$")
_SUPABASE_PATH = re.compile(r"(?:^|/)auth/v1/?$")
_STYTCH_JWKS = re.compile(r"/sessions/jwks/(project-[a-z]+-[0-9a-f-]+)/?$")


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting the profile needs: its variable, a value, and why.

    A value in angle brackets (``<your API identifier>``) is a placeholder the
    user fills in; any other value is exact (derived from the issuer URL or
    fixed by the issuer).
    """

    name: str
    value: str
    note: str = ""

    @property
    def is_placeholder(self) -> bool:
        """True when :attr:`value` is for the user to fill in."""
        return self.value.startswith("<")

    def line(self) -> str:
        """``NAME=value`` and the note, for a person to read (never written to a file)."""
        return f"{self.name}={self.value}" + (f"  ({self.note})" if self.note else "")


@dataclass(frozen=True, slots=True)
class Detection:
    """The issuer a bake recognised and what jwtedge needs to read its tokens."""

    #: The ``claims.profile`` value.
    profile: str
    #: The issuer's product name, for people.
    name: str
    #: What gave it away, e.g. ``the host ends with .kinde.com``.
    evidence: str
    #: :data:`PROFILE_VAR` first, then the settings the profile needs.
    settings: tuple[Setting, ...]


# -- reading the URL and the document -----------------------------------------


@dataclass(frozen=True, slots=True)
class _Url:
    host: str
    path: str
    segments: tuple[str, ...]


def _parse(url: str) -> _Url | None:
    # Stytch's default issuer is "stytch.com/<project_id>", with no scheme.
    text = url if "://" in url else f"https://{url}"
    try:
        parts = urlsplit(text)
        host = parts.hostname
    except ValueError:
        return None
    if not host:
        return None
    path = parts.path or "/"
    return _Url(host.rstrip(".").lower(), path, tuple(s for s in path.split("/") if s))


def _under(host: str, *domains: str) -> bool:
    """``host`` is one of ``domains`` or a subdomain of one (whole labels only)."""
    return any(host == d or host.endswith("." + d) for d in domains)


def _text(document: Mapping[str, Any], key: str) -> str:
    value = document.get(key)
    return value if isinstance(value, str) else ""


def _texts(document: Mapping[str, Any], key: str) -> list[str]:
    value = document.get(key)
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, str)]


def _path_of(url: str) -> str:
    parsed = _parse(url) if url else None
    return parsed.path if parsed is not None else ""


# -- one record per issuer ----------------------------------------------------

UrlRule = Callable[[_Url], str | None]
DocRule = Callable[[Mapping[str, Any]], str | None]
Settings = Callable[[_Url | None, Mapping[str, Any]], list[Setting]]


@dataclass(frozen=True, slots=True)
class _Issuer:
    profile: str
    name: str
    url: UrlRule
    document: DocRule
    settings: Settings


def _hosts(*domains: str) -> UrlRule:
    def rule(url: _Url) -> str | None:
        for domain in domains:
            if _under(url.host, domain):
                return (
                    f"the host is {domain}"
                    if url.host == domain
                    else f"the host ends with .{domain}"
                )
        return None

    return rule


def _no_document(document: Mapping[str, Any]) -> str | None:
    return None


def _audience(value: str, note: str = "") -> Setting:
    return Setting(_AUDIENCE, value, note)


def _clerk_url(url: _Url) -> str | None:
    if _under(url.host, "clerk.accounts.dev"):
        return "the host ends with .clerk.accounts.dev"
    # A production instance's Frontend API lives at clerk.<the app's domain>.
    if url.host.startswith("clerk.") and url.host.count(".") >= 2:
        return "the host is clerk.<domain>, Clerk's production Frontend API"
    return None


def _clerk_settings(url: _Url | None, document: Mapping[str, Any]) -> list[Setting]:
    return [
        _audience(
            "<your app's origins, e.g. https://app.example.com>",
            "Clerk's azp: the origin that asked for the token",
        ),
        Setting("APP_CONFIG_COOKIES__ACCESS", "__session", "the cookie Clerk's frontend sets"),
        Setting("APP_CONFIG_COOKIES__HOST_PREFIX", "never", "Clerk's cookie has no __Host- prefix"),
        Setting(
            "APP_CONFIG_REFRESH__ENABLED",
            "false",
            "60-second tokens that Clerk's frontend refreshes itself",
        ),
    ]


def _workos_document(document: Mapping[str, Any]) -> str | None:
    if "/sso/jwks/" in _path_of(_text(document, "jwks_uri")):
        return "discovery's jwks_uri is WorkOS's /sso/jwks/<client_id>"
    return None


def _workos_settings(url: _Url | None, document: Mapping[str, Any]) -> list[Setting]:
    settings = [
        Setting(
            _AUDIENCE_CLAIM,
            "none",
            "WorkOS session tokens carry no aud; or set APP_CONFIG_AUTH__AUDIENCE when a "
            "JWT template adds one",
        )
    ]
    segments = url.segments if url is not None else ()
    if not _text(document, "jwks_uri") and len(segments) == 2 and segments[0] == "user_management":
        settings.append(
            Setting(
                "--jwks-url",
                f"https://api.workos.com/sso/jwks/{segments[1]}",
                "where WorkOS publishes this client's keys",
            )
        )
    return settings


def _zitadel_document(document: Mapping[str, Any]) -> str | None:
    names = _texts(document, "scopes_supported") + _texts(document, "claims_supported")
    if any(name.startswith("urn:zitadel:") for name in names):
        return "discovery lists urn:zitadel: scopes or claims"
    if _path_of(_text(document, "end_session_endpoint")).endswith("/oidc/v1/end_session"):
        return "discovery's end_session_endpoint is Zitadel's /oidc/v1/end_session"
    return None


def _kinde_document(document: Mapping[str, Any]) -> str | None:
    if _path_of(_text(document, "userinfo_endpoint")).endswith("/oauth2/v2/user_profile"):
        return "discovery's userinfo_endpoint is Kinde's /oauth2/v2/user_profile"
    return None


def _supabase_url(url: _Url) -> str | None:
    if _SUPABASE_PATH.search(url.path):
        if _under(url.host, "supabase.co"):
            return "the host ends with .supabase.co and the path is /auth/v1"
        return "the path ends with /auth/v1, where Supabase serves its auth"
    return None


def _firebase_settings(url: _Url | None, document: Mapping[str, Any]) -> list[Setting]:
    # https://securetoken.google.com/<project id>
    project = url.segments[-1] if url is not None and url.segments else None
    return [_audience(project or "<your Firebase project id>", "Firebase's aud")]


def _firebase_document(document: Mapping[str, Any]) -> str | None:
    if "securetoken@system.gserviceaccount.com" in _text(document, "jwks_uri"):
        return "discovery's jwks_uri holds Firebase's securetoken service account"
    return None


def _stytch_url(url: _Url) -> str | None:
    if url.host == "stytch.com" and len(url.segments) == 1:
        return "the issuer is stytch.com/<project_id>"
    if _under(url.host, "stytch.com", "stytch.dev") and url.host != "stytch.com":
        return f"the host ends with .{'.'.join(url.host.split('.')[-2:])}"
    return None


def _stytch_document(document: Mapping[str, Any]) -> str | None:
    if _STYTCH_JWKS.search(_path_of(_text(document, "jwks_uri"))):
        return "discovery's jwks_uri is Stytch's /sessions/jwks/<project_id>"
    return None


def _stytch_settings(url: _Url | None, document: Mapping[str, Any]) -> list[Setting]:
    project = None
    if url is not None and url.host == "stytch.com" and len(url.segments) == 1:
        project = url.segments[0]
    found = _STYTCH_JWKS.search(_path_of(_text(document, "jwks_uri")))
    if project is None and found:
        project = found.group(1)
    settings = [_audience(project or "<your Stytch project id>", "Stytch's aud")]
    if project is not None and not found:
        api = "test.stytch.com" if project.startswith("project-test-") else "api.stytch.com"
        settings.append(
            Setting(
                "--jwks-url",
                f"https://{api}/v1/b2b/sessions/jwks/{project}",
                f"B2B; a consumer project's is https://{api}/v1/sessions/jwks/{project}",
            )
        )
    return settings


def _descope_document(document: Mapping[str, Any]) -> str | None:
    if "/v2/keys/" in _path_of(_text(document, "jwks_uri")):
        return "discovery's jwks_uri is Descope's /v2/keys/<project_id>"
    return None


def _descope_settings(url: _Url | None, document: Mapping[str, Any]) -> list[Setting]:
    project = None
    if url is not None and _under(url.host, "descope.com") and len(url.segments) == 1:
        project = url.segments[0]
    return [
        _audience(
            project or "<your Descope project id>",
            "or APP_CONFIG_AUTH__AUDIENCE_CLAIM=none when your tokens carry no aud",
        )
    ]


def _logto_document(document: Mapping[str, Any]) -> str | None:
    names = _texts(document, "scopes_supported") + _texts(document, "claims_supported")
    if any(name.startswith("urn:logto:") for name in names):
        return "discovery lists urn:logto: scopes"
    return None


def _keycloak_url(url: _Url) -> str | None:
    found = _KEYCLOAK_PATH.search(url.path)
    if found:
        return f"the path ends with /realms/{found.group(1)}"
    return None


def _keycloak_document(document: Mapping[str, Any]) -> str | None:
    if "/protocol/openid-connect/" in _path_of(_text(document, "authorization_endpoint")):
        return "discovery's endpoints are under /protocol/openid-connect/"
    return None


def _cognito_url(url: _Url) -> str | None:
    if _COGNITO_HOST.match(url.host):
        return "the host is cognito-idp.<region>.amazonaws.com"
    return None


_ENTRA_HOSTS = (
    "login.microsoftonline.com",
    "sts.windows.net",
    "login.microsoftonline.us",
    "login.chinacloudapi.cn",
    "login.partner.microsoftonline.cn",
    "ciamlogin.com",
)


def _entra_document(document: Mapping[str, Any]) -> str | None:
    for key in ("cloud_instance_name", "tenant_region_scope", "msgraph_host"):
        if key in document:
            return f"discovery has Entra's {key}"
    return None


def _entra_settings(url: _Url | None, document: Mapping[str, Any]) -> list[Setting]:
    tenant = next((s for s in (url.segments if url else ()) if _GUID.match(s)), None)
    return [
        _audience("<your API's App ID URI or client id>", "Entra's aud"),
        Setting(
            "APP_CONFIG_AUTH__TENANTS",
            tenant.lower() if tenant else "<your tenant id>",
            "the tid values accepted",
        ),
    ]


def _auth0_document(document: Mapping[str, Any]) -> str | None:
    if "mfa_challenge_endpoint" in document:
        return "discovery has Auth0's mfa_challenge_endpoint"
    return None


def _okta_document(document: Mapping[str, Any]) -> str | None:
    if _path_of(_text(document, "authorization_endpoint")).endswith("/v1/authorize") and _path_of(
        _text(document, "jwks_uri")
    ).endswith("/v1/keys"):
        return "discovery's endpoints are Okta's /v1/authorize and /v1/keys"
    return None


def _okta_settings(url: _Url | None, document: Mapping[str, Any]) -> list[Setting]:
    default = url is not None and url.segments[-2:] == ("oauth2", "default")
    return [
        _audience(
            "api://default" if default else "<your authorization server's audience>",
            "Okta's aud",
        )
    ]


def _fixed(*settings: Setting) -> Settings:
    def build(url: _Url | None, document: Mapping[str, Any]) -> list[Setting]:
        return list(settings)

    return build


#: In order: the first record whose URL rule matches wins; only when none
#: does are the discovery rules tried, in the same order.
_ISSUERS: tuple[_Issuer, ...] = (
    _Issuer("clerk", "Clerk", _clerk_url, _no_document, _clerk_settings),
    _Issuer(
        "workos",
        "WorkOS",
        _hosts("api.workos.com", "authkit.app"),
        _workos_document,
        _workos_settings,
    ),
    _Issuer(
        "zitadel",
        "Zitadel",
        _hosts("zitadel.cloud", "zitadel.ch"),
        _zitadel_document,
        _fixed(_audience("<your Zitadel project id>", "the project id Zitadel puts in aud")),
    ),
    _Issuer(
        "kinde",
        "Kinde",
        _hosts("kinde.com"),
        _kinde_document,
        _fixed(_audience("<your API's audience, as registered in Kinde>", "Kinde's aud")),
    ),
    _Issuer(
        "supabase",
        "Supabase",
        _supabase_url,
        _no_document,
        _fixed(_audience("authenticated", "Supabase puts the role's audience in aud")),
    ),
    _Issuer(
        "firebase",
        "Firebase",
        _hosts("securetoken.google.com"),
        _firebase_document,
        _firebase_settings,
    ),
    _Issuer("stytch", "Stytch", _stytch_url, _stytch_document, _stytch_settings),
    _Issuer(
        "propelauth",
        "PropelAuth",
        _hosts("propelauthtest.com", "propelauth.com"),
        _no_document,
        _fixed(Setting(_AUDIENCE_CLAIM, "none", "PropelAuth access tokens carry no aud")),
    ),
    _Issuer(
        "descope",
        "Descope",
        _hosts("descope.com"),
        _descope_document,
        _descope_settings,
    ),
    _Issuer(
        "logto",
        "Logto",
        _hosts("logto.app"),
        _logto_document,
        _fixed(
            _audience(
                "<your API resource indicator>",
                "or urn:logto:organization:<id> for organization tokens",
            )
        ),
    ),
    _Issuer(
        "keycloak",
        "Keycloak",
        _keycloak_url,
        _keycloak_document,
        _fixed(
            _audience("<the audience your access tokens carry>", "Keycloak's aud"),
            Setting("APP_CONFIG_AUTH__CLIENT_ID", "<your client id>", "for resource_access roles"),
        ),
    ),
    _Issuer(
        "cognito",
        "Amazon Cognito",
        _cognito_url,
        _no_document,
        _fixed(_audience("<your app client id>", "Cognito carries it in client_id")),
    ),
    _Issuer("entra", "Microsoft Entra ID", _hosts(*_ENTRA_HOSTS), _entra_document, _entra_settings),
    _Issuer(
        "auth0",
        "Auth0",
        _hosts("auth0.com"),
        _auth0_document,
        _fixed(_audience("<your API identifier>", "Auth0's aud")),
    ),
    _Issuer(
        "okta",
        "Okta",
        _hosts("okta.com", "oktapreview.com", "okta-emea.com", "okta-gov.com"),
        _okta_document,
        _okta_settings,
    ),
)

#: Every profile this module can name, in detection order.
PROFILES: tuple[str, ...] = tuple(issuer.profile for issuer in _ISSUERS)


# -- the public functions -----------------------------------------------------


def match_url(issuer: str) -> tuple[str, str] | None:
    """``(profile, evidence)`` from the issuer URL's host and path alone, or ``None``."""
    url = _parse(issuer)
    if url is None:
        return None
    for record in _ISSUERS:
        evidence = record.url(url)
        if evidence is not None:
            return record.profile, evidence
    return None


def match_discovery(document: Mapping[str, Any]) -> tuple[str, str] | None:
    """``(profile, evidence)`` from what only one issuer's discovery document says, or ``None``."""
    for record in _ISSUERS:
        evidence = record.document(document)
        if evidence is not None:
            return record.profile, evidence
    return None


def detect(
    issuer: str, document: Mapping[str, Any] | None = None, *, jwks_uri: str | None = None
) -> Detection | None:
    """The issuer's profile and settings, from its URL first, then its discovery document.

    ``document`` is the discovery document as fetched (``None`` when the bake
    skipped discovery); anything that is not a JSON object counts as none.
    ``jwks_uri`` is where the keys came from: with ``--jwks-url`` (Stytch's
    ``/sessions/jwks/<project_id>``, WorkOS's ``/sso/jwks/<client_id>``) it is
    the only hint besides the issuer, so it stands in for the document's.
    """
    doc: dict[str, Any] = dict(document) if isinstance(document, Mapping) else {}
    if jwks_uri and not _text(doc, "jwks_uri"):
        doc["jwks_uri"] = jwks_uri
    found = match_url(issuer) or match_discovery(doc)
    if found is None:
        return None
    profile, evidence = found
    record = next(r for r in _ISSUERS if r.profile == profile)
    settings = [Setting(PROFILE_VAR, profile), *record.settings(_parse(issuer), doc)]
    return Detection(profile, record.name, evidence, tuple(settings))


def describe(detection: Detection | None) -> Sequence[str]:
    """Lines for a person: what was recognised and the settings it needs."""
    if detection is None:
        return [
            "issuer not recognised: the default claims profile (jwtedge) applies; "
            f"set {PROFILE_VAR} if your issuer is one jwtedge knows"
        ]
    lines = [
        f"issuer recognised: {detection.name} ({detection.evidence}); profile {detection.profile}"
    ]
    lines.append("settings it needs:")
    lines.extend(f"  {setting.line()}" for setting in detection.settings)
    return lines
