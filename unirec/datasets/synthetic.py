"""Synthetic users, items and interactions with planted, learnable structure, at any scale.

Why: tests and benchmarks need inputs of any size (100 to 10M interactions) whose signal is
known, in every feature kind, so a model that reads a kind well can be seen to win by it:

- categorical/continuous: each user prefers 1-3 item categories fixed by their occupation and
  age group; 80% of interactions fall in them. Inside a category, items made for the user's
  age group (``audience``) and for the climate of the user's ``country`` (``weather``) are
  drawn several times more often ("locations to weather items, age groups to products").
- text: titles and descriptions name the category's keywords, the weather and the audience.
- image: a PNG whose hue and shape encode the category.
- temporal: ``prev_interactions`` come from the preferred categories; ``price_history`` ends
  just before the current price and falls for items on sale, which are twice as popular
  (rising prices: half as popular).
- interactions: timestamped view/click/cart/purchase; carts and purchases concentrate on the
  preferred categories.

``holdout_items`` holds a seeded share of the items out of training, for new-item tests: they
stay in ``item_data`` (with all their content) but their interactions move to ``holdout``
(and out of users' ``prev_interactions``), like the shared protocol's mixed split.

Everything is built as numpy/Polars columns (no per-interaction Python), so 10M interactions
take ~20 s to generate and write; only ``--images`` writes one file per item.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from unirec.store.layout import SECTION_TABLES

CATEGORIES: dict[str, tuple[str, str, str]] = {
    "electronics": ("gadget", "digital", "wireless"), "books": ("novel", "paperback", "story"),
    "clothing": ("shirt", "jacket", "cotton"), "sports": ("fitness", "running", "training"),
    "home": ("kitchen", "furniture", "cozy"), "beauty": ("skincare", "lotion", "fragrance"),
    "toys": ("puzzle", "playset", "plush"), "grocery": ("organic", "snack", "coffee"),
    "garden": ("planter", "seeds", "outdoor"), "automotive": ("engine", "tire", "motor"),
    "music": ("guitar", "vinyl", "melody"), "movies": ("film", "cinema", "bluray"),
    "games": ("console", "arcade", "quest"), "health": ("vitamin", "wellness", "supplement"),
    "pets": ("puppy", "kitten", "leash"), "office": ("notebook", "stapler", "desk"),
    "jewelry": ("necklace", "silver", "diamond"), "travel": ("luggage", "passport", "backpack"),
    "baby": ("stroller", "diaper", "nursery"), "tools": ("drill", "wrench", "hammer"),
}
OCCUPATIONS = ("engineer", "teacher", "artist", "student", "doctor", "lawyer", "farmer",
               "writer", "nurse", "retired", "sales", "chef")
COUNTRIES = ("US", "DE", "FR", "GB", "JP", "BR", "IN", "CA", "ES", "IT")
GENDERS = ("f", "m", "x")
ADJECTIVES = ("classic", "modern", "compact", "deluxe", "vintage", "smart", "premium", "basic",
              "bright", "quiet", "rugged", "elegant", "handy", "bold", "gentle", "sleek")
NOUNS = ("edition", "set", "pack", "collection", "bundle", "model", "series", "kit", "pair",
         "box", "version", "selection", "classic", "special", "essentials", "original")
GLOBAL_TAGS = ("new", "sale", "bestseller", "eco", "gift", "limited", "imported", "refurbished")
INTERACTION_TYPES = ("view", "click", "cart", "purchase")
# The climate of each country, and the weather an item is made for ("any": none in particular).
CLIMATE_OF = {"GB": "rainy", "FR": "rainy", "JP": "rainy", "DE": "snowy", "CA": "snowy",
              "US": "sunny", "BR": "sunny", "IN": "sunny", "ES": "sunny", "IT": "sunny"}
CLIMATES = ("rainy", "snowy", "sunny")
WEATHERS = (*CLIMATES, "any")
WEATHER_PHRASES = ("waterproof for rainy days", "insulated for snowy winters",
                   "light and cool for sunny summers", "good in any weather")
AUDIENCES = ("young", "adult", "senior")  # one per age group (AGE_EDGES)
AUDIENCE_PHRASES = ("a favourite with students and teens", "made for busy professionals",
                    "easy to use for seniors")
P_WEATHER_ITEM = 0.5  # share of items made for one weather; the rest are "any"
BOOST_CLIMATE = 4.0  # draw weight of an item made for the user's climate, within a category
BOOST_AUDIENCE = 3.0  # draw weight of an item made for the user's age group
TREND_POPULARITY = (2.0, 1.0, 0.5)  # falling (on sale), flat, rising price: popularity factor
TREND_STEP = 0.08  # relative price change per step back in a falling/rising history
AGE_EDGES = (30.0, 50.0)  # age groups: <30, 30-49, 50+
P_PREFERRED = 0.8  # share of interactions drawn from the user's preferred categories
T0 = 1_704_067_200  # 2024-01-01T00:00:00Z; timestamps span one year from here
SPAN = 365 * 86_400
MAX_SEQ = 5

_KEYWORDS = np.array([kw for kws in CATEGORIES.values() for kw in kws])
_TAGS = np.array([*_KEYWORDS, *GLOBAL_TAGS])


@dataclass(frozen=True)
class Synthetic:
    """Generated sections as Polars frames (input-format columns) plus the planted truth."""

    users: pl.DataFrame
    items: pl.DataFrame
    interactions: pl.DataFrame
    preferred: np.ndarray  # (n_users, 3) preferred category indices into CATEGORIES, -1 pads
    holdout: pl.DataFrame | None = None  # interactions on held-out items (not in the document)
    new_items: np.ndarray | None = None  # the held-out item ids, sorted

    def frames(self) -> dict[str, pl.DataFrame]:
        """Sections keyed like the document, kept columnar so writers avoid Python records."""
        return {"user_data": self.users, "item_data": self.items,
                "interactions": self.interactions}

    def document(self) -> dict[str, list[dict[str, Any]]]:
        """The JSON-ready input document (lists of records) that unirec users hand over."""
        return {name: df.to_dicts() for name, df in self.frames().items()}


def default_shape(n_interactions: int) -> tuple[int, int, int]:
    """(users, items, interactions) scaled from one size, so benchmarks agree on shapes."""
    return max(10, n_interactions // 20), max(20, n_interactions // 50), n_interactions


def generate(n_users: int, n_items: int, n_interactions: int, seed: int = 0,
             images_dir: Path | None = None) -> dict[str, list[dict[str, Any]]]:
    """A deterministic input document; see ``synthesize`` for the columnar, scalable form."""
    return synthesize(n_users, n_items, n_interactions, seed, images_dir).document()


def synthesize(n_users: int, n_items: int, n_interactions: int, seed: int = 0,
               images_dir: Path | None = None, holdout_items: float = 0.0) -> Synthetic:
    """Generate all sections as columns; ``images_dir`` (inside the document's folder) adds PNGs.

    ``holdout_items`` (0 <= f < 1): round(f * n_items) items, drawn among those with
    interactions by their own seeded generator (the rest of the data does not change), keep
    their records but lose their interactions to ``Synthetic.holdout``.

    Image paths are stored relative to the document's folder as ``<images_dir.name>/i<id>.png``,
    so pass a directory that sits directly in the folder the document is written to.
    """
    if n_users < 1 or n_items < 1 or n_interactions < 0:
        raise ValueError("need n_users >= 1, n_items >= 1 and n_interactions >= 0")
    if not 0.0 <= holdout_items < 1.0:
        raise ValueError(f"holdout_items must be in [0, 1), not {holdout_items}")
    rng = np.random.default_rng(seed)
    cat, items = _items(rng, n_items)
    samplers = _Samplers(cat, items)
    preferred, n_pref, context, users = _users(rng, n_users, np.unique(cat), samplers)
    interactions = _interactions(rng, n_interactions, preferred, n_pref, context, cat, samplers)
    if images_dir is not None:
        paths = _draw_images(rng, Path(images_dir), cat)
        items = items.with_columns(pl.struct(pl.Series("main_image", paths)).alias("image"))
    items = items.drop("_pop", "_weather", "_audience")
    if holdout_items > 0:
        return _hold_out(Synthetic(users, items, interactions, preferred), holdout_items, seed)
    return Synthetic(users, items, interactions, preferred)


def _hold_out(data: Synthetic, fraction: float, seed: int) -> Synthetic:
    """Move the interactions of a seeded ``fraction`` of the items to ``holdout``."""
    seen = np.unique(data.interactions["item_id"].to_numpy())
    n = min(len(seen), int(round(fraction * data.items.height)))
    rng = np.random.default_rng([seed, 14])  # its own stream: the data stays as without
    new = np.sort(rng.choice(seen, size=n, replace=False)) if n else np.zeros(0, np.int64)
    held = data.interactions["item_id"].is_in(new.tolist())
    prev = pl.col("temporal").struct.field("prev_interactions")
    users = data.users.with_columns(pl.col("temporal").struct.with_fields(
        prev.list.eval(pl.element().filter(~pl.element().is_in(new.tolist())))))
    return Synthetic(users, data.items, data.interactions.filter(~held), data.preferred,
                     holdout=data.interactions.filter(held), new_items=new)


def write_holdout(data: Synthetic, directory: Path) -> list[Path]:
    """``holdout.csv`` (the held-out interactions, a test set for ``evaluate``-style
    scorers) and ``new_items.csv`` (their ids) in ``directory``; nothing without a holdout."""
    if data.holdout is None or data.new_items is None:
        return []
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    data.holdout.write_csv(directory / "holdout.csv")
    pl.DataFrame({"item_id": data.new_items}).write_csv(directory / "new_items.csv")
    return [directory / "holdout.csv", directory / "new_items.csv"]


def write_document(doc: dict[str, Any] | Synthetic, path: Path) -> None:
    """Write one JSON document, one record per line, streaming each section in chunks."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for i, (name, df) in enumerate(_as_frames(doc).items()):
            f.write(("{" if i == 0 else ",\n") + f'"{name}": [\n')
            for start in range(0, df.height, 500_000):
                text = df.slice(start, 500_000).write_ndjson().rstrip("\n")
                f.write((",\n" if start else "") + text.replace("\n", ",\n"))
            f.write("\n]")
        f.write("}\n")


def write_folder(doc: dict[str, Any] | Synthetic, directory: Path, fmt: str = "jsonl") -> None:
    """Write users/items/interactions as .jsonl or .parquet: the streaming path for big inputs."""
    if fmt not in ("jsonl", "parquet"):
        raise ValueError(f"fmt must be 'jsonl' or 'parquet', not {fmt!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, df in _as_frames(doc).items():
        target = directory / f"{SECTION_TABLES[name]}.{fmt}"
        df.write_ndjson(target) if fmt == "jsonl" else df.write_parquet(target)


def _as_frames(doc: dict[str, Any] | Synthetic) -> dict[str, pl.DataFrame]:
    """Accept a Synthetic, a dict of frames, or a dict of record lists."""
    if isinstance(doc, Synthetic):
        return doc.frames()
    return {name: v if isinstance(v, pl.DataFrame) else pl.DataFrame(v, infer_schema_length=None)
            for name in SECTION_TABLES if (v := doc.get(name)) is not None}


class _ItemSampler:
    """Draws items by weight, optionally within given categories, via one searchsorted."""

    def __init__(self, cat: np.ndarray, weight: np.ndarray) -> None:
        self.order = np.argsort(cat, kind="stable")
        cat_sorted, w = cat[self.order], weight[self.order]
        totals = np.bincount(cat, weights=weight, minlength=len(CATEGORIES))
        before = np.concatenate([[0.0], np.cumsum(totals)[:-1]])
        within = (np.cumsum(w) - before[cat_sorted]) / totals[cat_sorted]
        last = np.r_[cat_sorted[1:] != cat_sorted[:-1], True]
        within[last] = 1.0  # each category's keys run over (c, c + 1], ending exactly at c + 1
        self.keys = cat_sorted + np.minimum(within, 1.0)
        self.cdf = np.cumsum(weight) / weight.sum()

    def in_categories(self, rng: np.random.Generator, cats: np.ndarray) -> np.ndarray:
        idx = np.searchsorted(self.keys, cats + rng.random(len(cats)), side="right")
        return self.order[np.minimum(idx, len(self.keys) - 1)]

    def anywhere(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.minimum(np.searchsorted(self.cdf, rng.random(n), side="right"), len(self.cdf) - 1)


class _Samplers:
    """One sampler per user context (climate x age group), plus plain popularity.

    Why per context: boosting the items made for a user's climate and age group is a
    reweighting of popularity, so 9 precomputed samplers replace any per-row weighting.
    """

    def __init__(self, cat: np.ndarray, items: pl.DataFrame) -> None:
        pop, weather, audience = (items[c].to_numpy() for c in ("_pop", "_weather", "_audience"))
        self.popular = _ItemSampler(cat, pop)
        self.by_context = [
            _ItemSampler(cat, pop * np.where(weather == c, BOOST_CLIMATE, 1.0)
                         * np.where(audience == g, BOOST_AUDIENCE, 1.0))
            for c in range(len(CLIMATES)) for g in range(len(AUDIENCES))]

    def in_categories(self, rng: np.random.Generator, cats: np.ndarray,
                      context: np.ndarray) -> np.ndarray:
        """Row r: an item of category ``cats[r]`` drawn for a user of ``context[r]``."""
        out = np.empty(len(cats), dtype=np.int64)
        for c, sampler in enumerate(self.by_context):
            rows = np.flatnonzero(context == c)
            out[rows] = sampler.in_categories(rng, cats[rows])
        return out


def _items(rng: np.random.Generator, n: int) -> tuple[np.ndarray, pl.DataFrame]:
    """Items plus hidden columns ``_pop``, ``_weather``, ``_audience`` the samplers read."""
    n_cat = len(CATEGORIES)
    cat_p = 1.0 / np.sqrt(np.arange(n_cat) + 2.0)
    cat = rng.choice(n_cat, size=n, p=cat_p / cat_p.sum())
    cat[: min(n, n_cat)] = np.arange(min(n, n_cat))  # every category has items when n >= 20
    trend = rng.integers(0, len(TREND_POPULARITY), n)  # 0 falling, 1 flat, 2 rising
    pop = np.array(TREND_POPULARITY)[trend] / (rng.permutation(n) + 1.0) ** 0.8  # Zipf
    weather = np.where(rng.random(n) < P_WEATHER_ITEM, rng.integers(0, len(CLIMATES), n),
                       len(CLIMATES))
    audience = rng.integers(0, len(AUDIENCES), n)
    log_mu = rng.permutation(np.linspace(np.log(5.0), np.log(500.0), n_cat))
    price = np.round(np.exp(log_mu[cat] + 0.4 * rng.standard_normal(n)), 2)
    own = cat * 3 + rng.integers(0, 3, n)
    g1 = rng.integers(0, len(GLOBAL_TAGS), n)
    g2 = (g1 + 1 + rng.integers(0, len(GLOBAL_TAGS) - 1, n)) % len(GLOBAL_TAGS)
    second = np.where(rng.random(n) < 0.5, cat * 3 + (own - cat * 3 + 1) % 3, len(_KEYWORDS) + g1)
    tags = np.stack([own, second, len(_KEYWORDS) + g2], axis=1)
    # oldest first, ending one step before now: falling prices were higher before
    steps = np.arange(MAX_SEQ, 0, -1)
    history = price[:, None] * (1 + TREND_STEP * (1 - trend)[:, None] * steps
                                + 0.01 * rng.standard_normal((n, MAX_SEQ)))
    frame = pl.DataFrame({
        "item_id": np.arange(1, n + 1, dtype=np.int64),
        "categorical": pl.DataFrame({
            "category": pl.Series(list(CATEGORIES)).gather(cat),
            "tags": _lists(tags, rng.integers(1, 4, n)).list.eval(
                pl.element().replace_strict(range(len(_TAGS)), list(_TAGS))),
            "weather": pl.Series(WEATHERS).gather(weather),
            "audience": pl.Series(AUDIENCES).gather(audience),
        }).to_struct(),
        "continuous": pl.DataFrame({"price": price}).to_struct(),
        "text": _texts(rng, cat, weather, audience).to_struct(),
        "temporal": pl.DataFrame({"price_history": _lists(
            np.round(history, 2), rng.integers(0, MAX_SEQ + 1, n), last=True)}).to_struct(),
        "_pop": pop, "_weather": weather, "_audience": audience,
    })
    return cat, frame


def _texts(rng: np.random.Generator, cat: np.ndarray, weather: np.ndarray,
           audience: np.ndarray) -> pl.DataFrame:
    """Title "<adjective> <keyword> <noun>"; a description naming the category, its three
    keywords, the weather and the audience, so a text encoder can read all three links."""
    n = len(cat)
    first = rng.integers(0, 3, n)
    kw = [pl.Series(_KEYWORDS[cat * 3 + (first + j) % 3]) for j in range(3)]
    words = pl.DataFrame({
        "adj": np.array(ADJECTIVES)[rng.integers(0, len(ADJECTIVES), n)],
        "noun": np.array(NOUNS)[rng.integers(0, len(NOUNS), n)],
        "k0": kw[0], "k1": kw[1], "k2": kw[2],
        "cat": pl.Series(list(CATEGORIES)).gather(cat),
        "weather": pl.Series(WEATHER_PHRASES).gather(weather),
        "audience": pl.Series(AUDIENCE_PHRASES).gather(audience),
    })
    return words.select(
        pl.concat_str("adj", "k0", "noun", separator=" ").alias("title"),
        pl.format("A {} {} {} from our {} range, {} and {}; {}, {}.", "adj", "k0", "noun",
                  "cat", "k1", "k2", "weather", "audience").alias("description"))


def _users(rng: np.random.Generator, n: int, present: np.ndarray, samplers: _Samplers
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, pl.DataFrame]:
    """Users, their preferred categories (n, 3), how many they keep, and their context."""
    occ_p = 1.0 / (np.arange(len(OCCUPATIONS)) + 3.0)
    occ = rng.choice(len(OCCUPATIONS), size=n, p=occ_p / occ_p.sum())
    age = np.round(np.clip(rng.normal(38.0, 13.0, n), 18.0, 80.0))
    group = np.digitize(age, AGE_EDGES)
    country = rng.integers(0, len(COUNTRIES), n)
    climate = np.array([CLIMATES.index(CLIMATE_OF[c]) for c in COUNTRIES])[country]
    context = climate * len(AUDIENCES) + group
    # the planted truth: 3 distinct categories per (occupation, age group); a user keeps 1-3
    pool = np.resize(present, max(3, len(present)))
    pair = pool[np.argsort(rng.random((len(OCCUPATIONS) * 3, len(pool))), axis=1)[:, :3]]
    n_pref = rng.integers(1, 4, n)
    preferred = np.where(np.arange(3) < n_pref[:, None], pair[occ * 3 + group], -1)
    income = np.round(np.exp(10.4 + 0.012 * (age - 38.0) + 0.5 * rng.standard_normal(n)), 2)
    slot = (rng.random((n, MAX_SEQ)) * n_pref[:, None]).astype(np.int64)
    prev = samplers.in_categories(rng, preferred[np.arange(n)[:, None], slot].ravel(),
                                  np.repeat(context, MAX_SEQ)) + 1
    frame = pl.DataFrame({
        "user_id": np.arange(1, n + 1, dtype=np.int64),
        "categorical": pl.DataFrame({
            "occupation": pl.Series(OCCUPATIONS).gather(occ),
            "country": pl.Series(COUNTRIES).gather(country),
            "gender": pl.Series(GENDERS).gather(rng.integers(0, len(GENDERS), n)),
        }).to_struct(),
        "continuous": pl.DataFrame({"age": age, "income": income}).to_struct(),
        "temporal": pl.DataFrame({"prev_interactions": _lists(
            prev.reshape(n, MAX_SEQ), rng.integers(0, MAX_SEQ + 1, n))}).to_struct(),
    })
    return preferred, n_pref, context, frame


def _interactions(rng: np.random.Generator, n: int, preferred: np.ndarray, n_pref: np.ndarray,
                  context: np.ndarray, cat: np.ndarray, samplers: _Samplers) -> pl.DataFrame:
    n_users = len(preferred)
    activity = rng.lognormal(0.0, 1.0, n_users)
    base = 1 if n >= n_users else 0  # every user interacts when there are enough interactions
    counts = base + rng.multinomial(n - base * n_users, activity / activity.sum())
    user = np.repeat(np.arange(n_users), counts)
    from_pref = rng.random(n) < P_PREFERRED
    slot = (rng.random(n) * n_pref[user]).astype(np.int64)
    item = np.empty(n, dtype=np.int64)
    pref_user = user[from_pref]
    item[from_pref] = samplers.in_categories(rng, preferred[pref_user, slot[from_pref]],
                                             context[pref_user])
    item[~from_pref] = samplers.popular.anywhere(rng, int((~from_pref).sum()))
    in_pref = (cat[item][:, None] == preferred[user]).any(axis=1)
    p_buy = np.where(in_pref, 0.12, 0.03)  # the same for carts: both follow the preferences
    r = rng.random(n)
    kind = np.select([r < p_buy, r < 2 * p_buy, r < 2 * p_buy + 0.2], [3, 2, 1], 0)
    # per user: a start in the first half-year, then exponential gaps scaled to end by year end
    start = T0 + rng.random(n_users) * SPAN / 2
    cum = np.cumsum(rng.exponential(1.0, n))
    seg_start = np.cumsum(counts) - counts
    offset = np.concatenate([[0.0], cum])[seg_start]
    total = np.concatenate([[0.0], cum])[seg_start + counts] - offset
    frac = (cum - offset[user]) / np.maximum(total[user], 1e-12)
    ts = np.floor(start[user] + frac * (T0 + SPAN - 1 - start[user])).astype(np.int64)
    order = np.argsort(ts, kind="stable")  # a log in time order, users interleaved
    return pl.DataFrame({
        "user_id": user[order] + 1,
        "item_id": item[order] + 1,
        "interaction_type": pl.Series(INTERACTION_TYPES).gather(kind[order]),
        "timestamp": pl.from_epoch(pl.Series(ts[order]), "s").dt.strftime("%Y-%m-%dT%H:%M:%S"),
    })


def _lists(matrix: np.ndarray, lengths: np.ndarray, last: bool = False) -> pl.Series:
    """Rows of ``matrix`` cut to ``lengths`` (first or ``last`` values): variable-length list
    column without a loop."""
    frame = pl.DataFrame({"m": matrix, "n": lengths})
    rows = pl.col("m").arr.to_list()
    cut = rows.list.tail(pl.col("n")) if last else rows.list.head(pl.col("n"))
    return frame.select(cut).to_series()


def _draw_images(rng: np.random.Generator, directory: Path, cat: np.ndarray) -> list[str]:
    """32x32 PNGs whose hue and shape encode the category; small inputs only (one file each)."""
    from PIL import Image, ImageDraw

    directory.mkdir(parents=True, exist_ok=True)
    jitter = rng.integers(-4, 5, (len(cat), 2))
    noise = rng.integers(0, 40, (len(cat), 32, 32, 1), dtype=np.uint8)
    paths = []
    for i, c in enumerate(cat.tolist()):
        image = Image.fromarray(np.repeat(215 + noise[i], 3, axis=2), "RGB")
        rgb = colorsys.hsv_to_rgb(c / len(CATEGORIES), 0.9, 0.85)
        fill = tuple(int(255 * v) for v in rgb)
        x, y = 16 + int(jitter[i, 0]), 16 + int(jitter[i, 1])
        box = (x - 9, y - 9, x + 9, y + 9)
        draw = ImageDraw.Draw(image)
        if c % 4 == 0:
            draw.ellipse(box, fill=fill)
        elif c % 4 == 1:
            draw.rectangle(box, fill=fill)
        elif c % 4 == 2:
            draw.polygon([(x, y - 10), (x - 10, y + 9), (x + 10, y + 9)], fill=fill)
        else:
            draw.polygon([(x, y - 10), (x + 10, y), (x, y + 10), (x - 10, y)], fill=fill)
        name = f"i{i + 1}.png"
        image.save(directory / name)
        paths.append(f"{directory.name}/{name}")
    return paths
