"""Experiments: variants of the ranking, who gets which, and with what probability.

An experiment is configured as JSON (``STREAMREC_EXPERIMENT``)::

    {"name": "blend-vs-popular",
     "variants": [
        {"name": "learned", "share": 0.8},
        {"name": "popular", "share": 0.2, "signals": ["trending", "category"]},
        {"name": "fixed", "share": 0.0, "weights": {"covis": 1.0, "session": 0.3}}]}

A variant is a blend preset over the same candidates: ``signals`` keeps only the named
features of the learned blend (the others weigh 0), ``weights`` replaces the learned
blend by fixed weights (features not named weigh 0); neither: the learned blend. Users
are assigned by a keyed hash of their id (stable across processes and restarts), in
proportion to the shares; each written list carries its variant and the probability
with which that variant was chosen for it (its propensity), so that logged lists can
later be reweighted to estimate another policy (``models.offpolicy``).

>>> exp = parse_experiment('{"name": "e", "variants": [{"name": "a", "share": 1}, '
...                        '{"name": "b", "share": 1, "signals": ["trending"]}]}')
>>> exp.assign("u1") == exp.assign("u1"), [v.name for v in exp.variants]
(True, ['a', 'b'])
>>> exp.assign("u1")[1]
0.5
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import orjson

from models.ranking import FEATURES

__all__ = ["Variant", "Experiment", "InvalidExperiment", "parse_experiment", "DEFAULT"]

_F = {name: i for i, name in enumerate(FEATURES)}
MAX_VARIANTS = 16


class InvalidExperiment(ValueError):
    """The experiment configuration breaks its contract; the message says what to fix."""


@dataclass(frozen=True, slots=True)
class Variant:
    name: str
    share: float  # of the traffic, normalised over the experiment's variants
    signals: tuple[str, ...] | None = None  # features kept from the learned blend
    weights: tuple[tuple[str, float], ...] | None = None  # a fixed blend instead

    @property
    def learned(self) -> bool:
        """Whether this variant ranks by the learned blend as it is."""
        return self.signals is None and self.weights is None

    def blend(self, learned: np.ndarray) -> np.ndarray:
        """This variant's weight rows, from the learned ones (``contexts × features``)."""
        if self.weights is not None:
            row = np.zeros(learned.shape[1])
            for name, w in self.weights:
                row[_F[name]] = w
            return np.broadcast_to(row, learned.shape).copy()
        if self.signals is not None:
            mask = np.zeros(learned.shape[1])
            mask[[_F[s] for s in self.signals]] = 1.0
            return learned * mask
        return learned


@dataclass(frozen=True, slots=True)
class Experiment:
    name: str
    variants: tuple[Variant, ...]

    @property
    def propensities(self) -> np.ndarray:
        shares = np.array([v.share for v in self.variants], dtype=np.float64)
        return shares / shares.sum()

    def assign(self, user_id: str) -> tuple[int, float]:
        """``(variant index, propensity)`` of a user: a hash of the experiment name and
        the user id, so the same user stays in the same variant everywhere."""
        digest = hashlib.blake2b(f"{self.name}\0{user_id}".encode(), digest_size=8).digest()
        u = int.from_bytes(digest, "big") / 2.0**64
        p = self.propensities
        index = int(np.searchsorted(np.cumsum(p), u, side="right"))
        index = min(index, len(p) - 1)
        while p[index] == 0.0:  # u on a boundary next to an empty share
            index -= 1
        return index, float(p[index])

    def weight_rows(self, learned: np.ndarray) -> np.ndarray:
        """The weight table of a batch: the learned rows (``contexts × features``) for
        each variant in turn; request of variant v in context c uses row
        ``v * contexts + c``."""
        return np.concatenate([v.blend(learned) for v in self.variants])

    def describe(self) -> dict:
        return {"name": self.name, "variants": [
            {"name": v.name, "share": float(p), "signals": list(v.signals) if v.signals else None,
             "weights": dict(v.weights) if v.weights else None}
            for v, p in zip(self.variants, self.propensities)]}


DEFAULT = Experiment("default", (Variant("default", 1.0),))


def _name(raw, what: str) -> str:
    if not isinstance(raw, str) or not 0 < len(raw) <= 64 or not raw.isprintable() or "|" in raw:
        raise InvalidExperiment(f"{what} must be a printable string of 1..64 characters without '|', got {raw!r}")
    return raw


def _features(raw, what: str) -> Sequence[str]:
    unknown = [f for f in raw if f not in _F]
    if unknown:
        raise InvalidExperiment(f"{what}: unknown feature(s) {unknown}; known: {', '.join(FEATURES)}")
    return raw


def parse_experiment(raw: str | Mapping | None) -> Experiment:
    """The experiment of a JSON text or mapping; empty or None: :data:`DEFAULT` (one
    variant, the learned blend, for everyone)."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return DEFAULT
    if isinstance(raw, str):
        try:
            raw = orjson.loads(raw)
        except orjson.JSONDecodeError as ex:
            raise InvalidExperiment(f"not JSON ({ex})") from ex
    if not isinstance(raw, Mapping):
        raise InvalidExperiment("an experiment is a JSON object with 'name' and 'variants'")
    name = _name(raw.get("name"), "experiment name")
    variants_raw = raw.get("variants")
    if not isinstance(variants_raw, list) or not 1 <= len(variants_raw) <= MAX_VARIANTS:
        raise InvalidExperiment(f"'variants' must be a list of 1..{MAX_VARIANTS} objects")
    variants = []
    for i, v in enumerate(variants_raw):
        if not isinstance(v, Mapping):
            raise InvalidExperiment(f"variant {i} is not an object")
        vname = _name(v.get("name"), f"variant {i} name")
        share = v.get("share", 1.0)
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0.0 <= share <= 1e6:
            raise InvalidExperiment(f"variant {vname}: share must be a number >= 0, got {share!r}")
        signals = v.get("signals")
        weights = v.get("weights")
        if signals is not None and weights is not None:
            raise InvalidExperiment(f"variant {vname}: give 'signals' or 'weights', not both")
        if signals is not None:
            if not isinstance(signals, list) or not signals or not all(isinstance(s, str) for s in signals):
                raise InvalidExperiment(f"variant {vname}: 'signals' is a non-empty list of feature names")
            signals = tuple(_features(signals, f"variant {vname}"))
        if weights is not None:
            if not isinstance(weights, Mapping) or not weights or not all(
                    isinstance(w, (int, float)) and not isinstance(w, bool) and abs(w) < 1e6
                    for w in weights.values()):
                raise InvalidExperiment(f"variant {vname}: 'weights' maps feature names to numbers")
            weights = tuple((f, float(weights[f])) for f in _features(list(weights), f"variant {vname}"))
        extra = set(v) - {"name", "share", "signals", "weights"}
        if extra:
            raise InvalidExperiment(f"variant {vname}: unknown key(s) {sorted(extra)}")
        variants.append(Variant(vname, float(share), signals, weights))
    if len({v.name for v in variants}) != len(variants):
        raise InvalidExperiment("variant names must differ")
    if sum(v.share for v in variants) <= 0.0:
        raise InvalidExperiment("at least one variant needs a share above 0")
    extra = set(raw) - {"name", "variants"}
    if extra:
        raise InvalidExperiment(f"unknown key(s) {sorted(extra)}; an experiment has 'name' and 'variants'")
    return Experiment(name, tuple(variants))
