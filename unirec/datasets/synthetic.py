"""Synthetic users, items and interactions with planted, learnable structure, at any scale.

Why: tests and benchmarks need inputs of any size (100 to 10M interactions) whose signal is
known. Each user prefers 1-3 item categories fixed by their occupation and age group; most
interactions fall in those categories, with Zipf popularity inside each category. Item titles,
tags, prices and images carry the category, so content models can learn it too. Everything is
built as numpy/Polars columns (no per-interaction Python), so 10M interactions take seconds.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

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
INTERACTION_TYPES = ("view", "click", "purchase")
SECTIONS = {"user_data": "users", "item_data": "items", "interactions": "interactions"}
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
               images_dir: Path | None = None) -> Synthetic:
    """Generate all sections as columns; ``images_dir`` (inside the document's folder) adds PNGs.

    Image paths are stored relative to the document's folder as ``<images_dir.name>/i<id>.png``,
    so pass a directory that sits directly in the folder the document is written to.
    """
    if n_users < 1 or n_items < 1 or n_interactions < 0:
        raise ValueError("need n_users >= 1, n_items >= 1 and n_interactions >= 0")
    rng = np.random.default_rng(seed)
    cat, pop, items = _items(rng, n_items)
    sampler = _ItemSampler(cat, pop)
    preferred, n_pref, users = _users(rng, n_users, np.unique(cat), sampler)
    interactions = _interactions(rng, n_interactions, preferred, n_pref, cat, sampler)
    if images_dir is not None:
        paths = _draw_images(rng, Path(images_dir), cat)
        items = items.with_columns(pl.struct(pl.Series("main_image", paths)).alias("image"))
    return Synthetic(users, items, interactions, preferred)


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
        target = directory / f"{SECTIONS[name]}.{fmt}"
        df.write_ndjson(target) if fmt == "jsonl" else df.write_parquet(target)


def _as_frames(doc: dict[str, Any] | Synthetic) -> dict[str, pl.DataFrame]:
    """Accept a Synthetic, a dict of frames, or a dict of record lists."""
    if isinstance(doc, Synthetic):
        return doc.frames()
    return {name: v if isinstance(v, pl.DataFrame) else pl.DataFrame(v, infer_schema_length=None)
            for name in SECTIONS if (v := doc.get(name)) is not None}


class _ItemSampler:
    """Draws items by popularity, optionally within given categories, via one searchsorted."""

    def __init__(self, cat: np.ndarray, pop: np.ndarray) -> None:
        self.order = np.argsort(cat, kind="stable")
        cat_sorted, w = cat[self.order], pop[self.order]
        totals = np.bincount(cat, weights=pop, minlength=len(CATEGORIES))
        before = np.concatenate([[0.0], np.cumsum(totals)[:-1]])
        within = (np.cumsum(w) - before[cat_sorted]) / totals[cat_sorted]
        last = np.r_[cat_sorted[1:] != cat_sorted[:-1], True]
        within[last] = 1.0  # each category's keys run over (c, c + 1], ending exactly at c + 1
        self.keys = cat_sorted + np.minimum(within, 1.0)
        self.cdf = np.cumsum(pop) / pop.sum()

    def in_categories(self, rng: np.random.Generator, cats: np.ndarray) -> np.ndarray:
        idx = np.searchsorted(self.keys, cats + rng.random(len(cats)), side="right")
        return self.order[np.minimum(idx, len(self.keys) - 1)]

    def anywhere(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.minimum(np.searchsorted(self.cdf, rng.random(n), side="right"), len(self.cdf) - 1)


def _items(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, pl.DataFrame]:
    n_cat = len(CATEGORIES)
    cat_p = 1.0 / np.sqrt(np.arange(n_cat) + 2.0)
    cat = rng.choice(n_cat, size=n, p=cat_p / cat_p.sum())
    cat[: min(n, n_cat)] = np.arange(min(n, n_cat))  # every category has items when n >= 20
    pop = 1.0 / (rng.permutation(n) + 1.0) ** 0.8  # Zipf popularity over a random ranking
    log_mu = rng.permutation(np.linspace(np.log(5.0), np.log(500.0), n_cat))
    price = np.round(np.exp(log_mu[cat] + 0.4 * rng.standard_normal(n)), 2)
    own = cat * 3 + rng.integers(0, 3, n)
    g1 = rng.integers(0, len(GLOBAL_TAGS), n)
    g2 = (g1 + 1 + rng.integers(0, len(GLOBAL_TAGS) - 1, n)) % len(GLOBAL_TAGS)
    second = np.where(rng.random(n) < 0.5, cat * 3 + (own - cat * 3 + 1) % 3, len(_KEYWORDS) + g1)
    tags = np.stack([own, second, len(_KEYWORDS) + g2], axis=1)
    words = pl.DataFrame({"a": np.array(ADJECTIVES)[rng.integers(0, len(ADJECTIVES), n)],
                          "k": _KEYWORDS[cat * 3 + rng.integers(0, 3, n)],
                          "n": np.array(NOUNS)[rng.integers(0, len(NOUNS), n)]})
    title = words.select(pl.concat_str("a", "k", "n", separator=" ")).to_series()
    history = np.round(price[:, None] * (1 + 0.05 * rng.standard_normal((n, MAX_SEQ))), 2)
    frame = pl.DataFrame({
        "item_id": np.arange(1, n + 1, dtype=np.int64),
        "categorical": pl.DataFrame({
            "category": pl.Series(list(CATEGORIES)).gather(cat),
            "tags": _lists(tags, rng.integers(1, 4, n)).list.eval(
                pl.element().replace_strict(range(len(_TAGS)), list(_TAGS))),
        }).to_struct(),
        "continuous": pl.DataFrame({"price": price}).to_struct(),
        "text": pl.DataFrame({"title": title}).to_struct(),
        "temporal": pl.DataFrame({
            "price_history": _lists(history, rng.integers(0, MAX_SEQ + 1, n))}).to_struct(),
    })
    return cat, pop, frame


def _users(rng: np.random.Generator, n: int, present: np.ndarray,
           sampler: _ItemSampler) -> tuple[np.ndarray, np.ndarray, pl.DataFrame]:
    occ_p = 1.0 / (np.arange(len(OCCUPATIONS)) + 3.0)
    occ = rng.choice(len(OCCUPATIONS), size=n, p=occ_p / occ_p.sum())
    age = np.round(np.clip(rng.normal(38.0, 13.0, n), 18.0, 80.0))
    group = np.digitize(age, AGE_EDGES)
    # the planted truth: 3 distinct categories per (occupation, age group); a user keeps 1-3
    pool = np.resize(present, max(3, len(present)))
    pair = pool[np.argsort(rng.random((len(OCCUPATIONS) * 3, len(pool))), axis=1)[:, :3]]
    n_pref = rng.integers(1, 4, n)
    preferred = np.where(np.arange(3) < n_pref[:, None], pair[occ * 3 + group], -1)
    income = np.round(np.exp(10.4 + 0.012 * (age - 38.0) + 0.5 * rng.standard_normal(n)), 2)
    slot = (rng.random((n, MAX_SEQ)) * n_pref[:, None]).astype(np.int64)
    prev = sampler.in_categories(rng, preferred[np.arange(n)[:, None], slot].ravel()) + 1
    frame = pl.DataFrame({
        "user_id": np.arange(1, n + 1, dtype=np.int64),
        "categorical": pl.DataFrame({
            "occupation": pl.Series(OCCUPATIONS).gather(occ),
            "country": pl.Series(COUNTRIES).gather(rng.integers(0, len(COUNTRIES), n)),
            "gender": pl.Series(GENDERS).gather(rng.integers(0, len(GENDERS), n)),
        }).to_struct(),
        "continuous": pl.DataFrame({"age": age, "income": income}).to_struct(),
        "temporal": pl.DataFrame({"prev_interactions": _lists(
            prev.reshape(n, MAX_SEQ), rng.integers(0, MAX_SEQ + 1, n))}).to_struct(),
    })
    return preferred, n_pref, frame


def _interactions(rng: np.random.Generator, n: int, preferred: np.ndarray, n_pref: np.ndarray,
                  cat: np.ndarray, sampler: _ItemSampler) -> pl.DataFrame:
    n_users = len(preferred)
    activity = rng.lognormal(0.0, 1.0, n_users)
    base = 1 if n >= n_users else 0  # every user interacts when there are enough interactions
    counts = base + rng.multinomial(n - base * n_users, activity / activity.sum())
    user = np.repeat(np.arange(n_users), counts)
    from_pref = rng.random(n) < P_PREFERRED
    slot = (rng.random(n) * n_pref[user]).astype(np.int64)
    item = np.empty(n, dtype=np.int64)
    item[from_pref] = sampler.in_categories(rng, preferred[user[from_pref], slot[from_pref]])
    item[~from_pref] = sampler.anywhere(rng, int((~from_pref).sum()))
    in_pref = (cat[item][:, None] == preferred[user]).any(axis=1)
    p_buy = np.where(in_pref, 0.12, 0.03)
    r = rng.random(n)
    kind = np.where(r < p_buy, 2, np.where(r < p_buy + 0.2, 1, 0))
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


def _lists(matrix: np.ndarray, lengths: np.ndarray) -> pl.Series:
    """Rows of ``matrix`` cut to ``lengths``: variable-length list column without a loop."""
    frame = pl.DataFrame({"m": matrix, "n": lengths})
    return frame.select(pl.col("m").arr.to_list().list.head(pl.col("n"))).to_series()


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
