"""The profile registry: every module in this package with a ``PROFILE``.

A built-in profile is a module ``verifier/profiles/<name>.py`` whose
``PROFILE`` is a :class:`~verifier.profiles.base.Profile` named ``<name>``;
the registry finds them on first use, so adding an issuer is adding a
module. Apps may add their own with :func:`register_profile`.
"""

from __future__ import annotations

import importlib
import pkgutil
import threading
from pathlib import Path

from .base import Profile

__all__ = ["get_profile", "profile_names", "register_profile"]

_NOT_PROFILES = frozenset({"base", "registry"})
_lock = threading.Lock()
_profiles: dict[str, Profile] = {}
_loaded = False


def _load() -> dict[str, Profile]:
    global _loaded
    if _loaded:
        return _profiles
    with _lock:
        if not _loaded:
            package = __name__.rpartition(".")[0]
            for info in sorted(pkgutil.iter_modules([str(Path(__file__).parent)])):
                if info.name.startswith("_") or info.name in _NOT_PROFILES:
                    continue
                module = importlib.import_module(f"{package}.{info.name}")
                profile = getattr(module, "PROFILE", None)
                if not isinstance(profile, Profile) or profile.name != info.name:
                    raise RuntimeError(
                        f"{package}.{info.name} must define PROFILE, a Profile named {info.name!r}"
                    )
                _profiles.setdefault(profile.name, profile)
            _loaded = True
    return _profiles


def profile_names() -> tuple[str, ...]:
    """The names ``claims.profile`` accepts, sorted."""
    return tuple(sorted(_load()))


def get_profile(name: str) -> Profile:
    """The profile called ``name``; ``KeyError`` naming the known ones otherwise."""
    profiles = _load()
    try:
        return profiles[name]
    except KeyError:
        known = ", ".join(sorted(profiles))
        raise KeyError(f"unknown claims profile {name!r}; known profiles: {known}") from None


def register_profile(profile: Profile) -> Profile:
    """Add an app's own profile (selectable with ``claims.profile``).

    Refuses a name already taken, so a built-in profile is never replaced.
    """
    if not profile.name or not isinstance(profile, Profile):
        raise ValueError("a profile needs a name")
    profiles = _load()
    with _lock:
        if profile.name in profiles:
            raise ValueError(f"a profile named {profile.name!r} is already registered")
        profiles[profile.name] = profile
    return profile
