"""The hidden structure of a synthetic shop catalog (``workloads.traffic``'s items).

Categories with realistic names, styles and prices; Zipf popularity within each category;
a hidden circular order of each category's items that styles, brands and tags follow, so
that content similarity and "related item" browsing carry learnable signal. The event
generator draws from the same structure (:meth:`ShopCatalog.popular`,
:meth:`ShopCatalog.related`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from workloads.traffic import TrafficConfig

__all__ = ["ShopCatalog", "TOP_N"]

# name -> (typical price, style vocabulary in hidden-order sequence). Interleaved across
# fashion, electronics and home so that any prefix is a plausible shop.
_CATEGORIES: dict[str, tuple[float, tuple[str, ...]]] = {
    "shoes": (79, ("running", "trail", "training", "casual", "slip-on", "loafer", "formal", "leather", "boot", "waterproof")),
    "headphones": (89, ("in-ear", "sport", "wireless", "noise-cancelling", "over-ear", "studio", "open-back", "gaming", "kids", "bluetooth")),
    "dresses": (59, ("mini", "bodycon", "evening", "wrap", "midi", "floral", "summer", "linen", "maxi", "knit")),
    "cookware": (45, ("nonstick", "frying-pan", "wok", "saucepan", "stockpot", "cast-iron", "dutch-oven", "stainless", "copper", "induction")),
    "jackets": (119, ("windbreaker", "rain", "fleece", "softshell", "puffer", "insulated", "quilted", "bomber", "biker", "leather")),
    "smartphones": (499, ("budget", "compact", "dual-sim", "5g", "flagship", "foldable", "camera", "gaming", "rugged", "refurbished")),
    "jeans": (69, ("skinny", "slim", "straight", "relaxed", "wide-leg", "bootcut", "high-rise", "distressed", "raw", "stretch")),
    "bedding": (49, ("cotton", "percale", "sateen", "linen", "duvet", "pillow", "weighted", "silk", "flannel", "kids")),
    "t-shirts": (19, ("basic", "crew-neck", "v-neck", "pocket", "striped", "graphic", "oversized", "cropped", "long-sleeve", "organic")),
    "laptops": (899, ("chromebook", "student", "ultrabook", "2-in-1", "business", "creator", "workstation", "gaming", "oled", "refurbished")),
    "bags": (59, ("tote", "shopper", "crossbody", "shoulder", "clutch", "backpack", "laptop", "travel", "duffel", "leather")),
    "skincare": (24, ("cleanser", "toner", "serum", "vitamin-c", "retinol", "moisturiser", "spf", "night-cream", "eye-cream", "mask")),
    "watches": (149, ("digital", "sport", "smartwatch", "fitness", "diver", "chronograph", "automatic", "dress", "minimalist", "vintage")),
    "furniture": (249, ("stool", "chair", "desk", "bookcase", "shelf", "cabinet", "sideboard", "table", "sofa", "armchair")),
    "sweaters": (59, ("cardigan", "knit", "cable-knit", "wool", "merino", "cashmere", "turtleneck", "crew-neck", "hoodie", "zip-up")),
    "cameras": (599, ("action", "instant", "compact", "bridge", "mirrorless", "dslr", "lens", "tripod", "drone", "vlogging")),
    "fitness": (39, ("yoga-mat", "resistance-band", "kettlebell", "dumbbell", "barbell", "bench", "rower", "treadmill", "bike", "foam-roller")),
    "toys": (29, ("baby", "plush", "wooden", "puzzle", "board-game", "building-blocks", "science", "remote-control", "outdoor", "doll")),
    "sunglasses": (89, ("aviator", "wayfarer", "round", "cat-eye", "oversized", "sport", "polarised", "wraparound", "clubmaster", "kids")),
    "lighting": (59, ("bulb", "smart-bulb", "led-strip", "desk-lamp", "floor-lamp", "pendant", "chandelier", "wall-light", "outdoor", "solar")),
    "books": (16, ("picture-book", "young-adult", "fantasy", "science-fiction", "thriller", "crime", "biography", "history", "cookbook", "travel")),
    "speakers": (129, ("portable", "waterproof", "party", "smart", "bookshelf", "soundbar", "subwoofer", "hi-fi", "turntable", "radio")),
    "jewelry": (69, ("stud", "hoop", "earrings", "pendant", "necklace", "chain", "bracelet", "bangle", "ring", "silver")),
    "camping": (79, ("tent", "sleeping-bag", "mat", "stove", "lantern", "cooler", "hammock", "chair", "backpack", "trekking-poles")),
    "fragrance": (65, ("citrus", "fresh", "aquatic", "green", "floral", "fruity", "gourmand", "amber", "woody", "musk")),
    "cycling": (59, ("helmet", "gloves", "lights", "lock", "pump", "bottle", "saddle", "pedals", "jersey", "e-bike")),
    "pet-supplies": (22, ("cat-food", "cat-litter", "cat-toy", "scratching-post", "dog-bed", "dog-toy", "dog-food", "leash", "aquarium", "bird")),
    "gardening": (34, ("seeds", "pots", "soil", "gloves", "pruner", "hose", "sprinkler", "mower", "greenhouse", "grill")),
    "coffee": (29, ("espresso", "filter", "beans", "grinder", "moka", "french-press", "pour-over", "capsules", "milk-frother", "cold-brew")),
    "swimwear": (39, ("bikini", "swimsuit", "tankini", "trunks", "board-shorts", "rash-guard", "cover-up", "kids", "goggles", "towel")),
}
_COLOURS = ("black", "white", "grey", "navy", "blue", "red", "green", "beige", "brown", "pink")
_COLOUR_P = np.array([0.24, 0.16, 0.12, 0.1, 0.09, 0.08, 0.07, 0.06, 0.05, 0.03])
_SYLLABLES = ("nor", "dik", "ve", "lo", "ka", "tr", "ion", "ar", "bel", "sa", "mi", "zo", "ren", "ta", "quo", "fen", "lux", "mo")
_N_BRANDS = 8
TOP_N = 16  # most popular items per category (the carousel's pool)


def _category_kinds(n: int) -> list[str]:
    base = list(_CATEGORIES)
    return [base[c % len(base)] for c in range(n)]


def _category_names(n: int) -> list[str]:
    """Realistic names; beyond the built-in list, numbered variants (``shoes-2``)."""
    per = len(_CATEGORIES)
    return [kind + ("" if c < per else f"-{c // per + 1}") for c, kind in enumerate(_category_kinds(n))]


class ShopCatalog:
    """Hidden structure of the catalog, shared by the catalog records and the events."""

    def __init__(self, cfg: TrafficConfig) -> None:
        rng = np.random.default_rng([cfg.seed, 1])
        n, nc = cfg.n_items, cfg.n_categories
        self.cat_names = _category_names(nc)
        sizes = 1 + rng.multinomial(n - nc, rng.dirichlet(np.full(nc, 4.0)))
        self.cat_start = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        self.cat_size = sizes
        seg_cat = np.repeat(np.arange(nc), sizes)
        seg_pos = np.arange(n) - self.cat_start[seg_cat]
        self.seg_items = rng.permutation(n)  # (category, hidden position) -> item index
        self.item_cat = np.empty(n, np.int64)
        self.item_cat[self.seg_items] = seg_cat
        self.item_pos = np.empty(n, np.int64)
        self.item_pos[self.seg_items] = seg_pos
        # Zipf popularity with ranks shuffled against the hidden order.
        rank = np.concatenate([rng.permutation(int(s)) for s in sizes])
        weight = (rank + 1.0) ** -cfg.item_popularity_skew
        cum = np.cumsum(weight)
        ends = np.cumsum(sizes) - 1
        before = np.concatenate([[0.0], cum[ends[:-1]]])
        self.seg_cdf = seg_cat + (cum - before[seg_cat]) / (cum[ends] - before)[seg_cat]
        self.seg_cdf[ends] = np.arange(nc) + 1.0
        by_rank = np.lexsort((rank, seg_cat))
        top = np.minimum(np.arange(TOP_N)[None, :], sizes[:, None] - 1)
        self.cat_top = self.seg_items[by_rank[self.cat_start[:, None] + top]]
        self.cat_weight = np.sqrt(sizes) * rng.lognormal(0.0, 0.5, nc)
        self.cat_weight /= self.cat_weight.sum()
        # Content follows the hidden order, so tags and brands carry signal.
        frac = seg_pos / sizes[seg_cat]
        kinds = [_CATEGORIES[k] for k in _category_kinds(nc)]
        styles = [kind[1] for kind in kinds]
        n_styles = np.array([len(s) for s in styles])[seg_cat]
        style = (frac * n_styles).astype(np.int64)
        style2 = (style + rng.choice([-1, 1], n)) % n_styles
        has_style2 = rng.random(n) < 0.5
        colour = rng.choice(len(_COLOURS), n, p=_COLOUR_P)
        brand = ((frac + rng.normal(0.0, 0.08, n)) % 1.0 * _N_BRANDS).astype(np.int64)
        brand_names = [
            "".join(rng.choice(_SYLLABLES, 2 + int(rng.random() < 0.3))).capitalize() for _ in range(nc * _N_BRANDS)
        ]
        base_price = np.array([kind[0] for kind in kinds], dtype=float)
        brand_factor = rng.lognormal(0.0, 0.3, nc * _N_BRANDS)
        price = base_price[seg_cat] * brand_factor[seg_cat * _N_BRANDS + brand] * rng.lognormal(0.0, 0.3, n)
        price = np.where(price > 5, np.round(price) - 0.01, np.round(price, 2)).clip(0.99)
        self.available = np.empty(n, bool)
        self.available[self.seg_items] = rng.random(n) >= cfg.unavailable_share
        self.price = np.empty(n)
        self.price[self.seg_items] = price
        self.item_ids = [f"p{i}" for i in range(n)]
        self.item_category = [self.cat_names[c] for c in self.item_cat.tolist()]
        self._content = (seg_cat, style, style2, has_style2, colour, brand, price, rng.integers(100, 1000, n))
        self._styles, self._brand_names = styles, brand_names
        colours = [_COLOURS[c] for c in colour.tolist()]
        nouns = [name.replace("-", " ") for name in self.cat_names]
        queries = [
            f"{colours[k]} {styles[c][st]} {nouns[c]}" if k % 2 else f"{styles[c][st]} {nouns[c]}"
            for k, (c, st) in enumerate(zip(seg_cat.tolist(), style.tolist()))
        ]
        seg_of_item = (self.cat_start[self.item_cat] + self.item_pos).tolist()
        self.query = [queries[k] for k in seg_of_item]
        self.colour = [colours[k] for k in seg_of_item]

    def records(self) -> list[dict]:
        """The catalog in the catalog contract, ordered by item index."""
        seg_cat, style, style2, has_style2, colour, brand, price, model_no = self._content
        out: list[dict] = [{}] * len(self.item_ids)
        for item, c, st, st2, two, col, br, pr, avail, mno in zip(
            self.seg_items.tolist(), seg_cat.tolist(), style.tolist(), style2.tolist(), has_style2.tolist(),
            colour.tolist(), brand.tolist(), price.tolist(), self.available[self.seg_items].tolist(), model_no.tolist(),
        ):
            vocab, noun = self._styles[c], self.cat_names[c].replace("-", " ")
            brand_name = self._brand_names[c * _N_BRANDS + br]
            out[item] = {
                "item_id": self.item_ids[item],
                "category": self.cat_names[c],
                "tags": [vocab[st], vocab[st2], _COLOURS[col]] if two else [vocab[st], _COLOURS[col]],
                "price": pr,
                "title": f"{brand_name} {vocab[st].replace('-', ' ').title()} {noun.title()} {mno}",
                "available": avail,
                "attributes": {"brand": brand_name, "colour": _COLOURS[col]},
            }
        return out

    def popular(self, rng: np.random.Generator, cats: np.ndarray) -> np.ndarray:
        """Draw one item per entry of ``cats`` by Zipf popularity within the category."""
        seg = np.searchsorted(self.seg_cdf, cats + rng.random(len(cats)), side="right")
        return self.seg_items[np.minimum(seg, len(self.seg_items) - 1)]

    def related(self, items: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """Items ``offsets`` steps away from ``items`` in their category's hidden circular order."""
        cat = self.item_cat[items]
        pos = (self.item_pos[items] + offsets) % self.cat_size[cat]
        return self.seg_items[self.cat_start[cat] + pos]
