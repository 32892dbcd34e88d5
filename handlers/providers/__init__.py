"""Provider registry: ``[providers.NAME]`` → the class that drives that provider.

Adding a provider is one module in this package, one line here, and its tests.
"""

from __future__ import annotations

from handlers.providers.apiframe import ApiframeProvider
from handlers.providers.apimart import ApimartProvider
from handlers.providers.base import Provider, ProviderConfig, SubmitResult, SubmitSpec
from handlers.providers.kie import KieProvider

PROVIDERS: dict[str, type[Provider]] = {
    "apiframe": ApiframeProvider,
    "kie": KieProvider,
    "apimart": ApimartProvider,
}

__all__ = ["PROVIDERS", "Provider", "ProviderConfig", "SubmitResult", "SubmitSpec"]
