"""The ``costroute`` command line: ``costroute serve``, a thin layer over
:func:`router.gateway.server.serve`.

Library errors (a config that does not load, a port in use, a missing gateway key)
become one line on stderr and exit code 2 here, and only here.
"""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from router.errors import InputError, fail_cli, run_cli
from router.gateway.app import DEFAULT_KEY_ENV, GatewaySettings

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    # Plain help: Rich's option table truncates long option names in an 80-column
    # terminal, and every option must be readable in full.
    rich_markup_mode=None,
    help="Serve the tuned router in front of any coding agent (OpenAI and Anthropic APIs).",
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            text = version("costroute")
        except PackageNotFoundError:
            text = "unknown (not installed)"
        sys.stdout.write(f"costroute {text}\n")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version,
            is_eager=True,
            metavar="",
            help="Print the costroute version and exit.",
        ),
    ] = False,
) -> None:
    """Serve the tuned router in front of any coding agent (OpenAI and Anthropic APIs)."""


class _LineFormatter(logging.Formatter):
    """Access lines are JSON already: printed as they are; other lines get a prefix."""

    def format(self, record: logging.LogRecord) -> str:
        if record.name == "costroute.access":
            return record.getMessage()
        return f"costroute: {record.levelname.lower()}: {record.getMessage()}"


def _setup_logging(level: str, access_log: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LineFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The access line is INFO; it follows --access-log whatever the level.
    logging.getLogger("costroute.access").setLevel(logging.INFO if access_log else logging.WARNING)
    logging.getLogger("costroute.gateway").setLevel(min(logging.INFO, root.level))
    # Provider keys never reach a log line: our own messages carry none, and the HTTP
    # libraries' debug logs (which print request headers) stay off at any --log-level.
    for noisy in ("httpx", "httpcore", "aiohttp", "uvicorn.access", "watchfiles"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@app.command()
def serve(
    config: Annotated[
        Path,
        typer.Option(
            "--config",
            "-c",
            help="Router config (YAML, JSON or TOML), e.g. the `optimize export` output. "
            "Watched: a valid new version is applied without dropping requests in flight; "
            "an invalid one is refused with a log line and the old one keeps serving.",
        ),
    ],
    host: Annotated[
        str,
        typer.Option(
            help="Address to listen on. Loopback by default; any other address requires the "
            "gateway key (see --key-env).",
        ),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).")] = 4000,
    record: Annotated[
        Path | None,
        typer.Option(
            help="Append one trace record per request to this .ndjson file (the trace "
            "schema `sim replay` reads; no prompts, no keys).",
        ),
    ] = None,
    record_attempts: Annotated[
        Path | None,
        typer.Option(
            help="Append one attempt record per provider call (retries and fallbacks "
            "included) to this .ndjson file, in the attempt-record schema `sim calibrate` "
            "fits a scenario from.",
        ),
    ] = None,
    key_env: Annotated[
        str,
        typer.Option(
            help="Environment variable holding the gateway key. When it is set, clients "
            "must send the key ('Authorization: Bearer KEY' or 'x-api-key: KEY'); it must be "
            "set when --host is not loopback.",
        ),
    ] = DEFAULT_KEY_ENV,
    max_body_mb: Annotated[
        float, typer.Option(help="Largest request body accepted, in MiB (larger: 413).")
    ] = 10.0,
    max_concurrency: Annotated[
        int,
        typer.Option(
            help="Requests served at once; beyond it the gateway answers 429 with Retry-After."
        ),
    ] = 512,
    overload_retry_after: Annotated[
        float, typer.Option(help="Retry-After (seconds) of the gateway's own 429s.")
    ] = 1.0,
    drain_timeout: Annotated[
        float,
        typer.Option(help="On SIGTERM or Ctrl-C: seconds requests in flight may take to finish."),
    ] = 30.0,
    watch: Annotated[
        bool, typer.Option("--watch/--no-watch", help="Reload the config file when it changes.")
    ] = True,
    access_log: Annotated[
        bool,
        typer.Option(
            "--access-log/--no-access-log",
            help="One JSON line per request on stderr (route, model, attempts, outcome, "
            "latency, cost).",
        ),
    ] = True,
    upstream: Annotated[
        str,
        typer.Option(
            help="HTTP client for provider calls: http1 (a lean pooled HTTP/1.1 client; the "
            "fast path), aiohttp or httpx.",
        ),
    ] = "http1",
    seed: Annotated[int, typer.Option(help="Seed of the policy's backoff and breaker jitter.")] = 0,
    log_level: Annotated[
        str, typer.Option(help="Level of the gateway's own log lines (debug ... error).")
    ] = "info",
) -> None:
    """Serve the routing policy as an OpenAI- and Anthropic-compatible HTTP API.

    POST /v1/chat/completions and /v1/messages (plain and streamed, tools), GET /v1/models,
    /metrics (Prometheus), /health and /ready.
    """
    if upstream not in ("http1", "aiohttp", "httpx"):
        fail_cli(f"--upstream: expected http1, aiohttp or httpx, got {upstream!r}")
    level = log_level.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        fail_cli(f"--log-level: expected debug, info, warning or error, got {log_level!r}")
    if not 0 <= port <= 65535:
        fail_cli(f"--port: expected 0..65535, got {port}")
    if max_body_mb <= 0 or max_concurrency < 1 or overload_retry_after <= 0 or drain_timeout < 0:
        fail_cli(
            "--max-body-mb, --max-concurrency and --overload-retry-after must be positive, "
            "--drain-timeout >= 0"
        )
    settings = GatewaySettings(
        host=host,
        port=port,
        key_env=key_env,
        max_body_bytes=int(max_body_mb * 1024 * 1024),
        max_concurrency=max_concurrency,
        overload_retry_after_s=overload_retry_after,
        drain_timeout_s=drain_timeout,
        watch=watch,
        record=record,
        record_attempts=record_attempts,
        upstream=upstream,  # type: ignore[arg-type]  # checked above
        seed=seed,
    )
    _setup_logging(level, access_log)
    log = logging.getLogger("costroute.gateway")

    def listening(url: str) -> None:
        log.info("listening on %s (config %s; Ctrl-C or SIGTERM drains and stops)", url, config)

    # uvicorn re-raises the signal it stopped on once it has drained; a handler that
    # does nothing lets the command then exit 0, as a clean shutdown should.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    from router.gateway.server import serve as run_server

    try:
        run_server(config, settings, log_level=log_level.lower(), on_listen=listening)
    except InputError as exc:  # ConfigError, GatewayError: one line, exit 2
        fail_cli(str(exc))
    log.info("stopped")


def main() -> None:
    """Entry point of the ``costroute`` command."""
    run_cli(app)


if __name__ == "__main__":
    main()
