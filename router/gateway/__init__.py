"""The gateway: the routing policy behind OpenAI- and Anthropic-compatible HTTP APIs.

A third driver of the same :class:`~router.policy.RoutingPolicy` (after the live
router and the simulator), served by uvicorn so that any coding agent can use the
tuned router by pointing its base URL at it::

    costroute serve --config tuned.yaml          # http://127.0.0.1:4000

From Python::

    from router.gateway import GatewayServer, GatewaySettings

    with GatewayServer("tuned.yaml", GatewaySettings(port=0)) as gw:
        ...  # OpenAI(base_url=gw.url + "/v1"), Anthropic(base_url=gw.url)

See :mod:`router.gateway.app` for the endpoints, route selection and safety
defaults, and :mod:`router.gateway.driver` for streaming and fallback.
"""

from router.gateway.app import (
    DEFAULT_KEY_ENV,
    Gateway,
    GatewayError,
    GatewaySettings,
    create_app,
    failure_reply,
    is_loopback,
)
from router.gateway.dialects import ChatRequest, ClientError, parse_anthropic, parse_openai
from router.gateway.driver import GatewayDriver, Routed, pin_first
from router.gateway.metrics import GatewayMetrics
from router.gateway.server import GatewayServer, bind, serve

__all__ = [
    "DEFAULT_KEY_ENV",
    "ChatRequest",
    "ClientError",
    "Gateway",
    "GatewayDriver",
    "GatewayError",
    "GatewayMetrics",
    "GatewayServer",
    "GatewaySettings",
    "Routed",
    "bind",
    "create_app",
    "failure_reply",
    "is_loopback",
    "parse_anthropic",
    "parse_openai",
    "pin_first",
    "serve",
]
