"""python -m switchyard.keys new [--id NAME]: mint a client API key and print
the config entry (digest + public prefix) to store instead of the key."""

from __future__ import annotations

import argparse
import secrets

from switchyard.config import hash_key, key_prefix


def new_key() -> str:
    return "sy_" + secrets.token_urlsafe(32)


def main() -> None:
    parser = argparse.ArgumentParser(prog="switchyard.keys")
    sub = parser.add_subparsers(dest="command", required=True)
    new = sub.add_parser("new", help="mint a key")
    new.add_argument("--id", default="my-key")
    new.add_argument("--tenant", default="default")
    args = parser.parse_args()
    key = new_key()
    print(f"key (shown once, give it to the client): {key}\n")
    print("config entry (api_keys:):")
    print(f"  - id: {args.id}\n    tenant: {args.tenant}")
    print(f"    prefix: \"{key_prefix(key)}\"\n    sha256: {hash_key(key)}")


if __name__ == "__main__":
    main()
