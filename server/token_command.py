"""`cliplive token add|list|remove`: the API tokens of a server's data folder (cliplive.server.tokens).

A running `serve` takes the changes within a second, without a restart. Torch-free: only the config
file (for its `data_dir`) and the tokens file are read."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

CONFIG_HELP = "the server's cliplive.toml, whose data_dir holds the tokens (default: ./cliplive-data, as serve's)"


def add_command(commands: argparse._SubParsersAction) -> None:
    t = commands.add_parser("token", help="API tokens with roles (viewer: reads only; admin: everything)")
    actions = t.add_subparsers(dest="token_action", required=True, metavar="{add,list,remove}")
    a = actions.add_parser("add", help="make a token and print it, only this once")
    a.add_argument("--role", required=True, metavar="ROLE",
                   help="viewer (streams, highlights, thumbnails, clips, events, metrics: reading only) or admin (everything)")
    a.add_argument("--name", help="what `token list` calls it (default: the role, numbered if taken)")
    a.set_defaults(run=run_add)
    listing = actions.add_parser("list", help="names, roles and creation times of the tokens (never the tokens)")
    listing.set_defaults(run=run_list)
    r = actions.add_parser("remove", help="revoke a token: a running server refuses it within a second")
    r.add_argument("name", help="the token's name, as `token list` shows it")
    r.set_defaults(run=run_remove)
    for action in (a, listing, r):
        action.add_argument("--config", metavar="FILE", help=CONFIG_HELP)


def token_file(args: argparse.Namespace):
    from cliplive.server.tokens import TokenFile

    return TokenFile(data_dir(args.config))


def data_dir(config: str | None) -> Path:
    from cliplive.server.config import ServerSettings, load_config

    return load_config(config).server.data_dir if config else ServerSettings.model_fields["data_dir"].default


def run_add(args: argparse.Namespace) -> int:
    tokens = token_file(args)
    token, secret = tokens.add(args.role, args.name)
    print(secret)  # alone on stdout, for TOKEN=$(cliplive token add ...)
    print(f"cliplive: added {token.role} token {token.name!r} to {tokens.path}; this is the only time it is shown",
          file=sys.stderr)
    return 0


def run_list(args: argparse.Namespace) -> int:
    file = token_file(args)
    tokens = file.read()
    if not tokens:
        print(f"cliplive: no tokens in {file.path}", file=sys.stderr)
        return 0
    width = max(len(t.name) for t in tokens)
    print(f"{'NAME':<{width}}  ROLE    CREATED")
    for t in tokens:
        print(f"{t.name:<{width}}  {t.role:<6}  {t.created}")
    return 0


def run_remove(args: argparse.Namespace) -> int:
    tokens = token_file(args)
    gone = tokens.remove(args.name)
    print(f"cliplive: removed {gone.role} token {gone.name!r} from {tokens.path}", file=sys.stderr)
    return 0
