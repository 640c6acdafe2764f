"""Plugin support: `hookimpl` marks a plugin's hook implementations (see `hookspecs`)."""

import pluggy

hookimpl = pluggy.HookimplMarker("dee")

__all__ = ["hookimpl"]
