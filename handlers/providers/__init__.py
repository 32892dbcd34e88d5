"""Provider registry: ``[providers.NAME]`` → the class that drives that provider.

Adding a provider is one module in this package, one line here, and its tests.
"""

from __future__ import annotations

from handlers.providers.apiframe import ApiframeProvider
from handlers.providers.apimart import ApimartProvider
from handlers.providers.base import Provider, ProviderConfig, SubmitResult, SubmitSpec
from handlers.providers.imaginepro import ImagineProProvider
from handlers.providers.kie import KieProvider
from handlers.providers.useapi import UseapiProvider

PROVIDERS: dict[str, type[Provider]] = {
    "apiframe": ApiframeProvider,
    "apimart": ApimartProvider,
    "imaginepro": ImagineProProvider,
    "kie": KieProvider,
    "useapi": UseapiProvider,
}

__all__ = ["PROVIDERS", "Provider", "ProviderConfig", "SubmitResult", "SubmitSpec"]
