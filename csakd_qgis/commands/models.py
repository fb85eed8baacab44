"""``csakd models``: list bundled and installed models, or print one model card."""

from __future__ import annotations

import argparse
import json

from csakd_qgis.models.checkpoint import read_card
from csakd_qgis.models.store import bundled_dir, describe, list_models, user_dir

NAME = "models"
HELP = "List the bundled and installed models and what each expects, or print a model's card."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare ``--card`` and ``--json``."""
    parser.add_argument("--card", metavar="FILE", default=None,
                        help="print the model card of this .safetensors file (reads only its header)")
    parser.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> int:
    """List models or print a card."""
    if args.card:
        card = read_card(args.card)
        print(card.to_json() if args.json else describe(card) + "\n\n" + card.to_json())
        return 0
    models = list_models()
    if args.json:
        print(json.dumps([{"path": str(p), "card": c.to_dict()} for p, c in models], indent=2))
        return 0
    if not models:
        print(f"no models found in {user_dir()} or {bundled_dir()}; train one with 'csakd train'")
    for path, card in models:
        print(f"{path}\n  {describe(card)}\n")
    return 0
