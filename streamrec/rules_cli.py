"""``streamrec rules``: add, delete and list merchandising rules (docs/merchandising.md).

``add`` and ``delete`` check each record with the worker's own parser and send it to the
controls topic (``STREAMREC_CONTROLS_TOPIC``); the worker applies it to the next lists
it ranks. ``list`` shows the rules the worker has in force: it reads ``{prefix}:rules``,
which the worker rewrites after each change it applied (so a rule just sent shows up
once a worker has taken it, and nothing shows while no worker runs).
"""

from __future__ import annotations

import sys
from pathlib import Path

import orjson

from models.rules import InvalidRule, parse_rule
from streamrec.settings import Settings

__all__ = ["register", "load_records"]


def load_records(text: str) -> list[dict]:
    """Rule records from JSON text: one object, a list of objects, or JSON lines."""
    text = text.strip()
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        try:
            data = [orjson.loads(line) for line in text.splitlines() if line.strip()]
        except orjson.JSONDecodeError as ex:
            msg = f"not JSON (one object, a list of objects, or one object per line): {ex}"
            raise InvalidRule("rule:not_json", msg) from ex
    return data if isinstance(data, list) else [data]


def _checked(records: list) -> list[dict]:
    for n, record in enumerate(records, 1):
        try:
            parse_rule(record)
        except InvalidRule as ex:
            where = f"rule {n}" + (f" ({record.get('rule_id')!r})" if isinstance(record, dict) else "")
            raise SystemExit(f"streamrec rules: {where} is not valid: {ex.reason}"
                             + (f" ({ex.detail})" if ex.detail else "")
                             + "; nothing was sent. See docs/merchandising.md") from None
    return records


def cmd_add(args) -> int:
    from connectors.rules_io import send_rules

    source = args.rules
    path = Path(source)
    text = path.read_text() if not source.lstrip().startswith(("{", "[")) and path.is_file() else source
    try:
        records = _checked(load_records(text))
    except InvalidRule as ex:
        hint = "" if source.lstrip().startswith(("{", "[")) else f" (no file {source!r} either)"
        print(f"streamrec rules add: {ex.detail}{hint}", file=sys.stderr)
        return 2
    settings = Settings.from_env()
    sent = send_rules(settings, records)
    print(f"sent {sent} rule record(s) to topic {settings.controls_topic!r}: "
          + ", ".join(f"{r['rule_id']} ({r['action']})" for r in records))
    return 0


def cmd_delete(args) -> int:
    from connectors.rules_io import send_rules

    settings = Settings.from_env()
    records = _checked([{"rule_id": rid, "action": "delete"} for rid in args.rule_ids])
    sent = send_rules(settings, records)
    print(f"sent {sent} deletion(s) to topic {settings.controls_topic!r}")
    return 0


def cmd_list(args) -> int:
    from connectors.rules_io import read_rules

    settings = Settings.from_env()
    rules = read_rules(settings)
    if args.json:
        print(orjson.dumps(rules, option=orjson.OPT_INDENT_2).decode())
        return 0
    if not rules:
        print(f"no rules in force under prefix {settings.prefix!r} (a worker writes "
              f"{settings.prefix}:rules once it has applied a rule)")
        return 0
    for r in rules:
        extra = {k: v for k, v in r.items() if k not in ("rule_id", "action")}
        print(f"{r['rule_id']:<20} {r['action']:<7} {orjson.dumps(extra).decode()}")
    return 0


def register(sub) -> None:
    rules = sub.add_parser("rules", help="add, delete and list merchandising rules")
    rsub = rules.add_subparsers(dest="rules_command", required=True)
    add = rsub.add_parser("add", help="send rule records (a JSON file, or JSON text)")
    add.add_argument("rules", help="FILE.json (an object, a list, or JSON lines) or the JSON itself")
    add.set_defaults(func=cmd_add)
    delete = rsub.add_parser("delete", help="remove rules by id")
    delete.add_argument("rule_ids", nargs="+", metavar="RULE_ID")
    delete.set_defaults(func=cmd_delete)
    show = rsub.add_parser("list", help="the rules the worker has in force")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_list)
