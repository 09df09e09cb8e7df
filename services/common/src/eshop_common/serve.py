"""`serve [module:app]`: run a service with uvicorn on $APP_PORT, as `dapr run` expects.

The app defaults to $APP_MODULE, which the service images set."""

import argparse
import os

import uvicorn


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="serve", description=__doc__)
    parser.add_argument(
        "app",
        nargs="?",
        default=os.environ.get("APP_MODULE"),
        help="import path of the ASGI app, e.g. basket.main:app (default: $APP_MODULE)",
    )
    parser.add_argument("--host", default=os.environ.get("APP_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("APP_PORT", "8000")))
    args = parser.parse_args(argv)
    if not args.app:
        parser.error("name the app (module:attribute) or set APP_MODULE")
    uvicorn.run(
        args.app,
        host=args.host,
        port=args.port,
        log_level=os.environ.get("LOG_LEVEL", "info").lower(),
        access_log=os.environ.get("ACCESS_LOG", "false").lower() == "true",
        proxy_headers=False,
    )
