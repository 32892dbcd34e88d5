"""Provider registry: ``[providers.NAME]`` → the class that drives that provider.

Adding a provider is one module in this package, one line here, and its tests.
"""

from __future__ import annotations

from handlers.providers.apiframe import ApiframeProvider
from handlers.providers.base import Provider, ProviderConfig, SubmitResult, SubmitSpec

PROVIDERS: dict[str, type[Provider]] = {
    "apiframe": ApiframeProvider,
}

__all__ = ["PROVIDERS", "Provider", "ProviderConfig", "SubmitResult", "SubmitSpec"]
