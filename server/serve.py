"""`cliplive serve`: the long-running service (config file, HTTP API, live events), on uvicorn.

Imports happen when the command runs, so that building the CLI's parser stays cheap."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cliplive.server.config import Config


def add_command(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("serve", help="run the service: streams from a config file, HTTP API, live events")
    p.add_argument("--config", metavar="FILE", help="cliplive.toml (default: built-in defaults, no streams)")
    p.add_argument("--host", help="address to bind (default: the config's, else 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: the config's, else 8080)")
    p.add_argument("--no-auth", action="store_true", help="no bearer token; only allowed on a loopback address")
    p.set_defaults(run=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from cliplive.server.app import GracefulServer, create_app
    from cliplive.server.cli import UserError, make_encoder, make_scorer
    from cliplive.server.config import is_loopback, load_config
    from cliplive.server.security import load_or_create_token
    from cliplive.server.service import Service

    config = load_config(args.config)
    server = config.server
    server.host = args.host or server.host
    server.port = server.port if args.port is None else args.port
    if args.no_auth and not is_loopback(server.host):
        raise UserError(f"--no-auth is only allowed on a loopback address (127.0.0.1, ::1, localhost), not {server.host}")
    token = None
    if not args.no_auth:
        token, created = (server.token, False) if server.token else load_or_create_token(server.data_dir)
        if created:  # the only time it is shown
            print(f"cliplive: generated an API token, saved in {server.data_dir / 'token'}:\n{token}", file=sys.stderr)
    sinks = sinks_from_config(config)  # config mistakes show before the model loads
    encoder_args = argparse.Namespace(encoder=config.encoder.kind, model=config.encoder.model, pretrained=config.encoder.pretrained,
                                      precision=config.encoder.precision, checkpoint=config.encoder.checkpoint)
    encoder = make_encoder(encoder_args)
    service = Service(config, encoder, make_scorer(encoder_args, encoder))
    for sink in sinks:
        service.add_sink(sink)
    log_level = "info" if args.verbose else "warning"
    uvicorn_config = uvicorn.Config(create_app(service, token), host=server.host, port=server.port, log_level=log_level,
                                    access_log=args.verbose >= 2, timeout_graceful_shutdown=5)
    print(f"cliplive: serving on http://{server.host}:{server.port} (API docs at /docs)", file=sys.stderr)
    GracefulServer(uvicorn_config, service).run()
    return 0


def sinks_from_config(config: Config) -> list:
    """Webhook and MQTT sinks from the config's `[[webhooks]]` and `[mqtt]` tables."""
    if not config.webhooks and config.mqtt is None:
        return []
    from cliplive.server.config import ConfigError
    from cliplive.server.sinks import MqttSink, WebhookSink

    wanted = [(f"webhooks[{i}]", WebhookSink, options) for i, options in enumerate(config.webhooks)]
    if config.mqtt is not None:
        wanted.append(("mqtt", MqttSink, config.mqtt))
    built = []
    for where, sink_class, options in wanted:
        try:
            built.append(sink_class(**options))
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{where}: {e}") from None
    return built
