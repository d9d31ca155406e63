"""The controls step: the merchandising rules in force, sent whole to every rank shard.

Rule records are rare (a merchandiser's edits), so one key (``"controls"``) holds them
all: it numbers each change, so every worker ends with the same rules whatever order the
copies of the broadcasts arrive in (a worker keeps the highest-numbered set), and it
writes them to the sink for ``streamrec rules list``.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Iterable

from bytewax.operators import StatefulBatchLogic

from models.rules import MAX_RULES
from operators.messages import DeadLetter, RuleChange, RulesUpdate, RulesWrite

__all__ = ["ControlStepConfig", "ControlLogic", "RuleBook"]


@dataclass(frozen=True)
class ControlStepConfig:
    rank_shards: int = 8
    max_rules: int = MAX_RULES
    snapshots: bool = True  # False when recovery is off (see dataflows.recommend)


class RuleBook:
    """The rules in force by id, in the order they were first added, and the change count."""

    __slots__ = ("rules", "seq")

    def __init__(self) -> None:
        self.rules: dict = {}
        self.seq = 0

    def __getstate__(self):
        return (self.rules, self.seq)

    def __setstate__(self, state):
        self.rules, self.seq = state


class ControlLogic(StatefulBatchLogic):
    def __init__(self, cfg: ControlStepConfig, resume: bytes | None) -> None:
        self.cfg = cfg
        self.book: RuleBook = pickle.loads(resume) if resume is not None else RuleBook()

    def on_batch(self, values: list) -> tuple[Iterable, bool]:
        book, out = self.book, []
        changed = False
        for msg in values:
            if not isinstance(msg, RuleChange):  # a programming error, not bad input
                err = f"controls step got an unexpected {type(msg).__name__}"
                raise TypeError(err)
            rule = msg.rule
            if rule.action == "delete":
                changed |= book.rules.pop(rule.rule_id, None) is not None
                continue
            if rule.rule_id not in book.rules and len(book.rules) >= self.cfg.max_rules:
                out.append(DeadLetter("rule:too_many", repr(rule.to_record()).encode()[:256],
                                      "controls", f"{self.cfg.max_rules} rules at most: "
                                      "delete some first"))
                continue
            book.rules[rule.rule_id] = rule
            changed = True
        if changed:
            book.seq += 1
            rules = tuple(book.rules.values())
            out.extend(RulesUpdate(f"rank-{s}", book.seq, rules)
                       for s in range(self.cfg.rank_shards))
            out.append(RulesWrite("rules", book.seq, [r.to_record() for r in rules]))
        return out, StatefulBatchLogic.RETAIN

    def snapshot(self) -> bytes | None:
        if not self.cfg.snapshots:
            return None
        return pickle.dumps(self.book, protocol=pickle.HIGHEST_PROTOCOL)
