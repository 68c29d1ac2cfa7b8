"""Providers: one attempt at one model endpoint, over HTTP or through LiteLLM.

::

    from router.providers import Endpoint, make_provider

    endpoint = Endpoint(base_url="https://api.openai.com/v1", model="gpt-4o-mini",
                        api_key_env="OPENAI_API_KEY")
    async with make_provider(endpoint) as provider:
        completion = await provider.complete(
            [{"role": "user", "content": "Write a regex for ISO dates."}], timeout_s=30)

Every provider obeys :class:`ModelProvider`'s contract: a :class:`Completion` or a
:class:`ProviderError` whose ``kind`` (an :class:`~router.outcome.ErrorKind`) the
routing policy acts on; ``provider.stream(...)`` is the same attempt handed over as it
arrives (:class:`TextDelta`, :class:`ToolCallDelta`, then :class:`StreamEnd`). Pass
``transport=Http1Transport()`` (:mod:`router.providers.http1`, a lean pooled HTTP/1.1
client; the gateway's default) or ``transport=AiohttpTransport()``
(:mod:`router.providers.aiohttp_transport`, aiohttp's pool) behind the same API; both
are imported on first use. :mod:`router.testing_http` is a scripted
loopback server to test against.
"""

from __future__ import annotations

import httpx

from router._lazy import lazy_exports
from router.errors import InputError
from router.providers.anthropic import AnthropicProvider
from router.providers.base import (
    Completion,
    ModelProvider,
    ProviderError,
    StreamEnd,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    scrub,
)
from router.providers.endpoint import Endpoint
from router.providers.litellm_adapter import LiteLLMProvider
from router.providers.openai import OpenAIProvider

__all__ = [
    "AiohttpTransport",
    "AnthropicProvider",
    "Completion",
    "Endpoint",
    "LiteLLMProvider",
    "ModelProvider",
    "OpenAIProvider",
    "Http1Transport",
    "ProviderError",
    "StreamEnd",
    "StreamEvent",
    "TextDelta",
    "ToolCallDelta",
    "make_provider",
    "scrub",
]

# The pooled transports import aiohttp / httptools: only when asked for.
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "AiohttpTransport": "router.providers.aiohttp_transport",
        "Http1Transport": "router.providers.http1",
    },
)


def make_provider(
    endpoint: Endpoint,
    *,
    client: httpx.AsyncClient | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> ModelProvider:
    """The provider implementing ``endpoint.kind``.

    ``client`` (shared, not closed by the provider) or ``transport`` (e.g.
    ``httpx.MockTransport``) apply to the HTTP kinds; passing either for
    ``"litellm"`` raises :class:`InputError`, as LiteLLM manages its own clients.
    """
    if endpoint.kind == "openai":
        return OpenAIProvider(endpoint, client=client, transport=transport)
    if endpoint.kind == "anthropic":
        return AnthropicProvider(endpoint, client=client, transport=transport)
    if client is not None or transport is not None:
        raise InputError("make_provider: client/transport do not apply to kind 'litellm'")
    return LiteLLMProvider(endpoint)
