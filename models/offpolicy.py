"""Off-policy evaluation: what CTR would another assignment of variants have had,
estimated from the lists that were logged (with the propensity of their variant).

One sample per list that was seen (an ``impression`` outcome): the variant that ranked
it, the probability that variant was chosen for it, and its reward (1 if any of its
items was clicked, else 0). A target policy gives each variant a share (it may give a
variant all traffic); with w = target share of the logged variant / propensity,

- IPS   = mean(w * reward): unbiased while every variant the target uses was logged
  with a propensity above 0;
- SNIPS = sum(w * reward) / sum(w): self-normalised, a little biased, lower variance.

Intervals are percentile bootstrap intervals (resampling lists, fixed seed).

>>> logged = [("a", 0.5, 1), ("a", 0.5, 0), ("b", 0.5, 0), ("b", 0.5, 0)]
>>> est = estimate(logged, {"a": 1.0}, resamples=200)
>>> est["ips"], est["snips"]
(0.5, 0.5)
"""

from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np

__all__ = ["samples_from_outcomes", "estimate", "parse_policy"]


def samples_from_outcomes(rows: Iterable[Mapping]) -> list[tuple[str, float, int]]:
    """``(variant, propensity, clicked)`` per seen list, from outcome rows (the
    ``{prefix}:outcomes`` stream or its JSONL export: ``kind``, ``rec_id``, ``variant``,
    ``propensity``)."""
    seen: dict[str, list] = {}
    clicked: set[str] = set()
    for row in rows:
        kind, rec_id = row.get("kind"), row.get("rec_id")
        if not rec_id:
            continue
        if kind == "impression" and rec_id not in seen:
            seen[rec_id] = [str(row.get("variant")), float(row.get("propensity") or 0.0)]
        elif kind == "click":
            clicked.add(rec_id)
    return [(v, p, int(r in clicked)) for r, (v, p) in seen.items() if p > 0.0]


def parse_policy(text: str) -> dict[str, float]:
    """``"popular"`` (all traffic) or ``"learned=0.7,popular=0.3"`` as shares summing to 1."""
    shares: dict[str, float] = {}
    for part in text.split(","):
        name, _, raw = part.strip().partition("=")
        if not name:
            raise ValueError(f"policy {text!r}: an empty variant name")
        try:
            shares[name] = float(raw) if raw else 1.0
        except ValueError as ex:
            raise ValueError(f"policy {text!r}: {part.strip()!r} is not variant=share") from ex
    total = sum(shares.values())
    if total <= 0 or any(s < 0 for s in shares.values()):
        raise ValueError(f"policy {text!r}: shares must be >= 0 and not all 0")
    return {k: v / total for k, v in shares.items()}


def estimate(samples: list[tuple[str, float, int]], policy: Mapping[str, float], *,
             resamples: int = 1000, level: float = 0.95, seed: int = 7) -> dict:
    """IPS and SNIPS estimates of ``policy``'s CTR per list with bootstrap intervals,
    beside the logged CTR and the effective sample size of the weights."""
    if not samples:
        raise ValueError("no seen lists in the log: nothing to estimate from")
    variants = np.array([s[0] for s in samples])
    prop = np.array([s[1] for s in samples], dtype=np.float64)
    reward = np.array([s[2] for s in samples], dtype=np.float64)
    target = np.array([policy.get(v, 0.0) for v in variants.tolist()])
    w = target / prop
    n = len(samples)

    def ips(idx):
        return (w[idx] * reward[idx]).mean(axis=-1)

    def snips(idx):
        ws = w[idx].sum(axis=-1)
        return np.where(ws > 0, (w[idx] * reward[idx]).sum(axis=-1) / np.where(ws > 0, ws, 1), 0.0)

    rng = np.random.default_rng(seed)
    chunk = max(1, 4_000_000 // n)  # resamples at a time: bounded memory for long logs
    got_ips, got_snips = [], []
    for start in range(0, resamples, chunk):
        boot = rng.integers(0, n, size=(min(chunk, resamples - start), n))
        got_ips.append(ips(boot))
        got_snips.append(snips(boot))
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    everyone = np.arange(n)
    out = {
        "lists": n, "logged_ctr": float(reward.mean()),
        "ips": float(ips(everyone)), "snips": float(snips(everyone)),
        "ips_ci": [float(x) for x in np.percentile(np.concatenate(got_ips), [lo, hi])],
        "snips_ci": [float(x) for x in np.percentile(np.concatenate(got_snips), [lo, hi])],
        "effective_lists": float(w.sum() ** 2 / (w**2).sum()) if (w > 0).any() else 0.0,
        "level": level,
        "unlogged_variants": sorted(set(policy) - set(variants.tolist())),
    }
    return out
