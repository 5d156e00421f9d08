"""``blina site-key``: make a site's Ed25519 key pair for signing its results packages."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["HELP", "EXAMPLES", "add_arguments", "run"]

HELP = ("make a site's Ed25519 key pair: <site>.key signs packages (keep it at the site), <site>.pub goes to the "
        "coordinator")
EXAMPLES = [
    "blina site-key --site-id center3 --out-dir /secure/blina-keys",
    "BLINA_KEY_PASSPHRASE=... blina site-key --site-id center3 --out-dir keys/   # encrypted private key",
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--site-id", required=True, help="this center's identifier (letters, digits, - and _)")
    p.add_argument("--out-dir", type=Path, required=True, help="folder for <site>.key (mode 0600) and <site>.pub")


def run(args: argparse.Namespace) -> int:
    from blina_study.analysis.federated.signing import generate_site_key, load_registry

    private, public = generate_site_key(args.site_id, args.out_dir)
    (kid,) = load_registry(public)[args.site_id]
    print(f"wrote {private} (private: keep it at the site, readable only by the account that runs site-run) and "
          f"{public} (key id {kid}: send it to the coordinator, who registers it in the --keys folder of blina pool). "
          f"Sign with: blina site-run ... --sign-key {private}")
    return 0
