"""`--set KEY=JSON`: any loop setting by its dotted name, for the commands that take a preset."""

from __future__ import annotations

import json

from django.core.management.base import CommandError


def add_set_argument(parser) -> None:
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                        help='Any other setting by dotted name, e.g. --set sample.sampler=\'"ddim"\'.')


def parse_set(items: list[str]) -> dict:
    changes = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            changes[key] = json.loads(value)
        except json.JSONDecodeError:
            raise CommandError(f"--set {item}: the value must be JSON (quote strings: '\"ddim\"')") from None
    return changes
