"""Where and how to reach one model: the wire-level half of a model profile.

An :class:`Endpoint` says which API dialect to speak, the base URL, the provider's
own model name, the NAME of the environment variable holding the API key, and the
timeouts and sampling settings of each call. Prices are not here: they belong to
the model profile that embeds the endpoint (see :meth:`Completion.cost_usd
<router.providers.base.Completion.cost_usd>`).

The key itself is never part of a config: configs are written to disk, exported
by the optimizer and shown in logs, so they carry only ``api_key_env``.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class Endpoint(BaseModel):
    """One provider endpoint of a model.

    ``kind`` picks the implementation (see :func:`router.providers.make_provider`):
    ``"openai"`` for any OpenAI-compatible ``/chat/completions`` server (OpenAI,
    vLLM, Ollama, OpenRouter, Together...), ``"anthropic"`` for the Messages API,
    ``"litellm"`` to delegate to LiteLLM (optional extra).

    ``base_url`` is the prefix the API path is appended to: ``https://api.openai.com/v1``
    (``/chat/completions`` is added) or ``https://api.anthropic.com`` (``/v1/messages``
    is added). For ``litellm`` it is passed as ``api_base``; an empty string leaves
    LiteLLM's default.

    Timeouts (seconds), and the :class:`~router.outcome.ErrorKind` each one gives:

    * ``connect_timeout_s`` bounds the TCP/TLS connect -> ``connect`` (as do a refused
      connection and a DNS failure).
    * ``first_token_timeout_s`` bounds the time from sending the request to the
      response headers and, when streaming, on to the first content token (text or
      a tool call) -> ``first_token_timeout``. A server that accepts the request and
      never answers costs exactly this long, streamed or not. (``None``: no such
      bound; the attempt's deadline, or a read timeout, still fires with the same
      kind while nothing has come back.)
    * ``read_timeout_s`` bounds each socket read (``None``: only the attempt's
      overall deadline applies) -> ``first_token_timeout`` while waiting for the
      headers (streaming: the first token), ``timeout`` after.
    * ``stall_timeout_s`` (streaming) bounds the gap between two received lines of
      the stream -> ``timeout`` once the answer has started (before the first token,
      without a ``first_token_timeout_s``, it also bounds that wait, as a
      ``first_token_timeout``).

    Whatever these say, an attempt never outlives the ``timeout_s`` the driver passes
    to ``complete``; when that deadline fires the kind says how far the answer got:
    ``first_token_timeout`` before the headers (streaming: the first token),
    ``timeout`` after.
    """

    # hide_input_in_errors: pydantic would otherwise quote the rejected input, and a
    # rejected api_key_env may be a pasted key. Our own messages name values where safe.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    kind: Literal["openai", "anthropic", "litellm"] = "openai"
    base_url: str
    model: str = Field(min_length=1)
    api_key_env: str | None = None
    connect_timeout_s: float = Field(default=5.0, gt=0)
    read_timeout_s: float | None = Field(default=None, gt=0)
    stream: bool = False
    first_token_timeout_s: float | None = Field(default=None, gt=0)
    stall_timeout_s: float | None = Field(default=None, gt=0)
    max_tokens: int | None = Field(default=None, gt=0)
    temperature: float | None = Field(default=None, ge=0)

    @field_validator("base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        # "…/v1/" + "/chat/completions" would give a double slash some servers reject.
        return value.strip().rstrip("/")

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        # A common mistake is pasting the key itself here. Real keys contain "-"
        # ("sk-proj-…", "sk-ant-…"), which a portable variable name cannot, so the
        # pattern catches them; the message never echoes the value, in case it IS a key.
        if value is None:
            return None
        if not _ENV_NAME.fullmatch(value):
            raise ValueError(
                "api_key_env must be the NAME of an environment variable "
                "(letters, digits, underscores; e.g. OPENAI_API_KEY), not the key itself"
            )
        return value

    @model_validator(mode="after")
    def _url_for_http_kinds(self) -> Endpoint:
        if self.kind != "litellm" and not self.base_url.startswith(("http://", "https://")):
            raise ValueError(
                f"base_url: expected an http:// or https:// URL for kind {self.kind!r}, "
                f"got {self.base_url!r}"
            )
        return self
