"""`cliplive serve`: the long-running service (config file, HTTP API, live events), on uvicorn.

Imports happen when the command runs, so that building the CLI's parser stays cheap."""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from cliplive.models.errors import InputError, Unavailable
from cliplive.server.options import add_encoder_options, add_min_score_option, encoder_spec, segmenter_options

if TYPE_CHECKING:
    from cliplive.server.config import Config, ServerSettings
    from cliplive.server.tokens import Credentials


def add_command(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("serve", help="run the service: streams from a config file, HTTP API, live events")
    p.add_argument("--config", metavar="FILE", help="cliplive.toml (default: built-in defaults, no streams)")
    p.add_argument("--host", help="address to bind (default: the config's, else 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: the config's, else 8080)")
    p.add_argument("--no-auth", action="store_true", help="no bearer token; only allowed on a loopback address")
    add_min_score_option(p, config_file=True)
    add_encoder_options(p, config_file=True)
    p.set_defaults(run=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from cliplive.models.encoder import EncoderUnavailable
    from cliplive.models.spec import create_encoder, load_scorer
    from cliplive.server.app import GracefulServer, create_app
    from cliplive.server.config import check_host, is_loopback, load_config
    from cliplive.server.progress import notice
    from cliplive.server.summarize import describe_spec
    from cliplive.server.service import Service
    from cliplive.server.storage import open_store

    config = load_config(args.config)
    config.encoder = encoder_spec(args, base=config.encoder)  # the command line wins over the file
    config.segmenter = replace(config.segmenter, **segmenter_options(args))
    server = config.server
    if args.host is not None:
        check_host(args.host)
    server.host = args.host or server.host
    server.port = server.port if args.port is None else args.port
    if args.no_auth and not is_loopback(server.host):
        raise InputError(f"--no-auth is only allowed on a loopback address (127.0.0.1, ::1, localhost), not {server.host}")
    check_data_dir(server.data_dir)
    check_can_listen(server.host, server.port)
    sinks = sinks_from_config(config)  # config mistakes show before the model loads
    credentials, save_tokens = (None, None) if args.no_auth else prepare_tokens(server)

    notice(f"loading encoder {describe_spec(config.encoder)} ...")
    try:
        encoder = create_encoder(config.encoder)
    except EncoderUnavailable as e:
        if args.config is None:
            raise
        raise EncoderUnavailable(f"{e}; in {args.config} the same goes in the [encoder] table (kind = \"conse\", "
                                 f"pretrained = \"/path\"), which command-line options override") from e
    scorer = load_scorer(config.encoder, encoder)
    open_store(server.data_dir).close()  # a disk that cannot take the store: one line now, not the server's traceback
    service = Service(config, encoder, scorer)
    for sink in sinks:
        service.add_sink(sink)
    log_level = "info" if args.verbose else "warning"
    uvicorn_config = uvicorn.Config(create_app(service, credentials), host=server.host, port=server.port, log_level=log_level,
                                    access_log=args.verbose >= 2, timeout_graceful_shutdown=5)
    GracefulServer(uvicorn_config, service, on_listening=save_tokens).run()
    return 0


def prepare_tokens(server: ServerSettings) -> tuple[Credentials, Callable[[], None] | None]:
    """The server's credentials, and what to write once it listens (None: nothing). The stored tokens are
    read now (they may be unusable); an old plain `token` file is turned into an admin token, or a new
    admin token made when there is none, only once the server listens, so that a start that fails prints its
    one error line and creates nothing. With `server.token` in the config, an old plain file stays as it
    is: it was not in use, and becoming valid now would surprise."""
    from cliplive.server.tokens import Credentials, TokenFile, new_secret, read_legacy_token

    tokens = TokenFile(server.data_dir)
    stored = tokens.read()
    legacy = None if server.token else read_legacy_token(server.data_dir)
    secret = None if server.token or legacy or any(t.role == "admin" for t in stored) else new_secret()

    def save_tokens() -> None:
        if legacy:
            tokens.migrate_legacy()
        if secret:
            token, _ = tokens.add("admin", secret=secret)
            print(f"cliplive: generated an API token, saved in {tokens.path} as admin token {token.name!r} (hashed: "
                  f"this is the only time it is shown):\n{secret}", file=sys.stderr)

    return Credentials(tokens, admin_token=server.token), save_tokens if legacy or secret else None


def check_can_listen(host: str, port: int) -> None:
    """Bind (and let go of) `host:port` up front: an address in use, or a host name that does not resolve,
    is one error line before anything loads, and before anything is created."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise InputError(f"cannot listen on {host}: {e.strerror}") from None
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server's own socket will be
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as e:
                raise Unavailable(f"cannot listen on {host}:{port}: {e.strerror}") from None


def check_data_dir(path: Path) -> None:
    """`data_dir` is a folder, or one can be made there; checked before anything is loaded or created."""
    if path.exists() and not path.is_dir():
        raise InputError(f"data_dir is a file, not a folder: {path}")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"data_dir cannot be made: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"data_dir cannot be {'written' if existing == path else 'made'}: {existing} is not writable")


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
        except (TypeError, ValueError, InputError) as e:  # the table's keys are the sink's keyword arguments
            raise ConfigError(f"{where}: {e}") from None
    return built
