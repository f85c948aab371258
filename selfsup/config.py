"""Typed configuration: every option of a run lives in a dataclass here or in its method's file.

A run's ``config.yaml`` is ``RunConfig`` written out in full (every default resolved), so
``selfsup pretrain --config RUN/config.yaml`` reproduces it. YAML is read with
``yaml.safe_load`` and checked field by field against the dataclasses: an unknown key or a
value of the wrong type is a ``SelfsupError`` naming the key, never a silent default.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from selfsup.errors import SelfsupError

Precision = Literal["auto", "32-true", "bf16-mixed", "16-mixed"]
PROTOCOLS = ("linear", "knn", "finetune", "supervised", "lora", "fewshot", "robustness", "ctc")
"""The evaluation protocols: frozen-feature probes, fine-tuning of the whole encoder, the
same architecture trained from scratch on the labels (the supervised reference), LoRA
fine-tuning, few-shot episodes on frozen features, and (speech) CTC fine-tuning scored by
character and word error rate."""


@dataclass
class DataConfig:
    """Where the unlabeled samples come from and how they are decoded (images) or tokenized (text)."""

    name: str = "digits"
    """A data spec: images ``digits``, ``fashion-mnist[:FOLDER]``, ``folder:PATH``,
    ``npz:PATH``, ``openclipart``, ``shards:PATH``; text ``fortunes``, ``gcide``, ``text:PATH``;
    audio ``asterisk[:en,fr]``, ``asterisk-digits``, ``audio:PATH``; either ``wds:PATH``
    (WebDataset shards, which say what they hold)."""
    image_size: int | None = None
    """Centre-crop and resize every image to this square size (any source); None keeps the
    source's own size. Folders of mixed sizes need it."""
    skip_bad: bool = False
    """Skip unreadable image files (they are counted in the log) instead of stopping."""
    num_workers: int = 0
    """Loader worker processes that decode files; 0 is best for in-memory sets (digits,
    fashion-mnist, npz), 2-8 for a folder of JPEG/PNG files."""
    max_length: int = 128
    """Text: tokens per sample, [CLS] and [SEP] included; longer texts are cut, shorter
    ones padded. 128 holds 99% of fortunes; raise it for documents (cost grows as L²)."""
    tokenizer: str = "wordpiece"
    """Text: ``wordpiece`` (BERT), ``bpe``, ``byte-bpe`` (GPT-2; no unknown tokens) or
    ``word`` (whole lowercased words seen 5 times or more: word2vec's vocabulary), trained
    on the training texts and saved as the run's tokenizer.json; or the path of a
    tokenizer.json to reuse (e.g. another run's, to compare models on equal tokens)."""
    vocab_size: int = 8000
    """Text: vocabulary size when the tokenizer is trained; 8000 suits corpora of a few MB,
    30000 (BERT) those of a GB."""
    sample_rate: int = 16000
    """Audio: every file is resampled to this rate (Hz); 16000 is what wav2vec 2.0 and HuBERT
    use; 8000 for telephone speech (the Asterisk prompts) halves the compute."""
    max_seconds: float = 4.0
    """Audio: each recording is cut to its first this-many seconds, shorter ones padded
    (and the padding masked); compute grows linearly (the Transformer's as its square)."""
    classes: tuple[int, ...] | None = None
    """Keep only the samples of these class ids (by label), in pretraining and evaluation:
    the tasks of a class-incremental stream (Fashion-MNIST classes 0-4, then 5-9). None
    keeps every sample; the data must have labels otherwise."""

    def validate(self) -> None:
        """The options every modality shares; ``RunConfig.validate`` asks the data's modality
        about its own (image size, text length)."""
        if self.num_workers < 0:
            raise SelfsupError(f"data.num_workers must be 0 or more, got {self.num_workers}")
        if self.classes is not None and (not self.classes or min(self.classes) < 0):
            raise SelfsupError(
                f"data.classes must list class ids of 0 or more, e.g. [0, 1, 2], got {list(self.classes)}"
            )


@dataclass
class TrainConfig:
    """The engine's options: how long, how fast, on what, and how often to save."""

    batch_size: int = 256
    max_steps: int | None = None
    max_epochs: int | None = None
    max_time: str | float | None = None
    """Wall-clock budget such as ``15m``, ``1h30m``, ``90s`` or a number of seconds; the run
    stops cleanly and saves. The cosine schedule is fitted to it (with ``max_steps`` or
    ``max_epochs`` too, to whichever ends first)."""
    optimizer: Literal["adamw", "lars", "sgd"] = "adamw"
    """AdamW is robust at batch sizes up to ~1024; LARS is what SimCLR/BYOL use for 4096."""
    momentum: float = 0.9
    """SGD's momentum (``optimizer: sgd``); 0 is plain SGD, as word2vec trains."""
    schedule: Literal["cosine", "linear"] = "cosine"
    """After the warm-up the learning rate falls to ``min_lr_ratio`` × peak along a cosine
    (the SSL recipes) or a straight line (word2vec: 0.025 to 0.025·1e-4 over the run)."""
    lr: float | None = None
    """Peak learning rate; None takes the method's recommendation (scaled by batch size / 256)."""
    weight_decay: float | None = None
    """None takes the method's recommendation."""
    warmup_fraction: float = 0.05
    """Linear warm-up over this share of the steps, then cosine decay to ``min_lr_ratio`` × peak."""
    min_lr_ratio: float = 0.01
    micro_batch_size: int | None = None
    """Process each batch in micro-batches of this many samples to fit memory, with the same
    update. Methods with a gradient cache (simclr) keep the exact full-batch contrastive loss;
    others accumulate gradients (exact for per-sample losses; BatchNorm sees micro-batches)."""
    gradient_cache: bool = True
    """Use the gradient cache when the method has one; False forces plain accumulation."""
    grad_checkpointing: bool = False
    """Recompute the encoder's blocks in the backward pass (ViT and text Transformer encoders):
    about 30% more compute for a fraction of the activation memory."""
    sync_batchnorm: bool = False
    """Synchronise BatchNorm statistics across processes (GPU runs with > 1 device): the
    global batch's statistics instead of each GPU's; worth it below ~64 images per GPU."""
    grad_clip: float | None = 3.0
    """Clip the global gradient norm; None turns clipping off."""
    precision: Precision = "auto"
    """``auto`` picks bf16-mixed on GPUs and CPUs with native bf16 (AVX512-BF16/AMX), else 32-true."""
    channels_last: bool = True
    """Channels-last memory format: about 1.4x faster convolutions on a CPU, free on a GPU."""
    accelerator: Literal["auto", "cpu", "cuda", "gpu", "mps"] = "auto"
    devices: int = 1
    strategy: Literal["auto", "ddp", "ddp_spawn", "fsdp"] = "auto"
    num_nodes: int = 1
    seed: int = 0
    log_every: int = 10
    """Write loss, lr and throughput to metrics.csv/TensorBoard every N steps."""
    collapse_every: int = 50
    """Measure the collapse metrics (effective rank, embedding std) every N steps."""
    collapse_rank_min: float = 1.5
    """Warn when the effective rank of the embeddings falls below this (1 = full collapse)."""
    collapse_std_min: float = 0.05
    """Warn when the std of the L2-normalised embeddings falls below this × 1/sqrt(D) (the
    value of well-spread embeddings; healthy encoders sit at 0.2-1 × it, collapse at 0)."""
    collapse_stop: bool = False
    """Stop the run with an error when the collapse monitor fires (the last checkpoint is
    kept); leave False to only warn, e.g. when a method recovers from early low rank."""
    checkpoint_every: int = 500
    """Save a resumable checkpoint every N steps (and always at the end)."""
    on_nan: Literal["stop", "skip"] = "stop"
    """What a NaN/Inf loss does: stop with a message (last good checkpoint kept) or skip the step."""
    progress: bool = True

    def validate(self) -> None:
        """Positive counts, numbers in their ranges, finite values."""
        positive = {
            "batch_size": self.batch_size,
            "devices": self.devices,
            "num_nodes": self.num_nodes,
            "log_every": self.log_every,
            "collapse_every": self.collapse_every,
            "checkpoint_every": self.checkpoint_every,
            "max_steps": self.max_steps,
            "max_epochs": self.max_epochs,
            "micro_batch_size": self.micro_batch_size,
        }
        for key, value in positive.items():
            if value is not None and value < 1:
                raise SelfsupError(f"train.{key} must be a positive integer, got {value}")
        if self.lr is not None and not self.lr > 0:
            raise SelfsupError(f"train.lr must be positive, got {self.lr}")
        if self.max_time is not None and not parse_duration(self.max_time) > 0:
            raise SelfsupError(f"train.max_time must be longer than 0 s, got {self.max_time!r}")
        if self.lr is not None and not math.isfinite(self.lr):
            raise SelfsupError(f"train.lr must be a finite number, got {self.lr}")
        ranges: list[tuple[str, float | None, float, float]] = [
            ("warmup_fraction", self.warmup_fraction, 0.0, 1.0),
            ("min_lr_ratio", self.min_lr_ratio, 0.0, 1.0),
            ("momentum", self.momentum, 0.0, 1.0),
            ("weight_decay", self.weight_decay, 0.0, math.inf),
            ("collapse_rank_min", self.collapse_rank_min, 0.0, math.inf),
        ]
        for key, value, lo, hi in ranges:
            if value is not None and not (lo <= value <= hi and math.isfinite(value)):
                upper = f" and {hi:g}" if math.isfinite(hi) else ""
                raise SelfsupError(f"train.{key} must lie between {lo:g}{upper}, got {value}")
        if self.grad_clip is not None and not (
            self.grad_clip > 0 and math.isfinite(self.grad_clip)
        ):
            raise SelfsupError(
                "train.grad_clip must be a positive norm (or null to turn clipping off), "
                f"got {self.grad_clip}"
            )
        if not 0 <= self.seed < 2**32:
            raise SelfsupError(f"train.seed must lie between 0 and 2**32 - 1, got {self.seed}")


@dataclass
class EvalConfig:
    """The evaluation protocol run after pretraining and by ``selfsup evaluate``."""

    data: str | None = None
    """Labelled data for evaluation; None uses the pretraining data's labels (train/test splits)."""
    protocols: tuple[str, ...] = ("linear", "knn")
    """``linear`` and ``knn`` probe frozen features; add ``finetune`` to train the whole
    encoder with a classification head (what masked models like MAE and BERT need),
    ``supervised`` for the same architecture trained from scratch on the labels with the
    fine-tuning budget (the reference self-supervision is compared with), ``lora`` for LoRA
    adapters (peft), ``fewshot`` for N-way K-shot episodes, ``robustness`` for the clean
    linear probe scored on the modality's corruptions of the test set."""
    label_fractions: tuple[float, ...] = (0.01, 0.1, 1.0)
    seeds: tuple[int, ...] = (0, 1, 2)
    knn_k: int = 20
    knn_temperature: float = 0.07
    baselines: bool = True
    """Also evaluate raw pixels and the same encoder at random init, in the same run."""
    max_train: int | None = None
    """Use at most this many labelled training samples (None: all)."""
    batch_size: int = 512
    finetune_fractions: tuple[float, ...] = (1.0,)
    """Label fractions fine-tuned (one seed each: fine-tuning is the slow protocol)."""
    finetune_epochs: int = 10
    finetune_max_time: str | None = None
    """Wall-clock cap per fine-tuning run, e.g. 5m; the run then stops early and is scored."""
    finetune_max_steps: int | None = None
    """Step cap per fine-tuning run (the schedule fitted to it): the budget that gives the
    same number on a loaded or a faster machine, unlike ``finetune_max_time``."""
    finetune_lr: float = 1e-3
    """Base AdamW learning rate per 256 samples; MAE fine-tunes ViTs at 1e-3 with layer
    decay 0.75, BERT at 2e-5 to 5e-5 × batch/32 (about 5e-4 here)."""
    finetune_layer_decay: float = 0.75
    """Layer-wise lr decay for ViT/Transformer blocks (1 = off)."""
    finetune_batch_size: int = 128
    finetune_head: Literal["probe", "small"] = "probe"
    """Start the head at the linear probe of the frozen features (LP-FT, Kumar et al. 2022)
    so a short fine-tuning run starts from the probe, not from chance; "small" is MAE's
    near-zero head."""
    lora_rank: int = 8
    """LoRA's rank r (``lora`` protocol); 4-16 work, 8 is the paper's common choice."""
    lora_alpha: float = 16.0
    """LoRA's scale: the update is alpha / r · B A; 2 × rank is the usual choice."""
    lora_lr: float = 1e-2
    """Base AdamW lr per 256 samples for the adapters and head: LoRA trains at about 10× the
    full fine-tuning lr (the adapters start at zero and are few)."""
    lora_merge: bool = False
    """Also write the encoder with the adapter merged in (``lora/merged/``), a plain export."""
    fewshot_way: int = 5
    """Classes per few-shot episode (N of N-way K-shot)."""
    fewshot_shots: tuple[int, ...] = (1, 5)
    """Labelled support samples per class (K), one row each; 1 and 5 are the literature's."""
    fewshot_queries: int = 15
    """Query samples per class and episode (15 in Prototypical Networks' evaluation)."""
    fewshot_episodes: int = 600
    """Episodes averaged (600 gives a 95% interval of about ±1 point)."""
    ctc_data: str | None = None
    """Transcribed recordings for the ``ctc`` protocol (``asterisk:en``); None uses the
    evaluation data."""
    ctc_minutes: float = 10.0
    """Labelled audio the ``ctc`` protocol fine-tunes on (wav2vec 2.0's smallest split)."""
    ctc_epochs: int = 30
    ctc_lr: float = 1e-3
    """Peak AdamW learning rate of CTC fine-tuning."""
    ctc_alphabet: str = "abcdefghijklmnopqrstuvwxyz' "
    """The characters CTC spells with (a space is the word boundary); transcripts are lower-
    cased and stripped of punctuation first. English letters by default."""
    ctc_max_seconds: float = 6.0
    """Recordings longer than this are left out of CTC fine-tuning and scoring."""
    report: bool = True
    """Write report.html with curves, the label-efficiency plot and a t-SNE map."""

    def validate(self) -> None:
        """Positive counts, known protocols, label fractions in (0, 1], no empty lists."""
        for key, value in [
            ("batch_size", self.batch_size),
            ("finetune_batch_size", self.finetune_batch_size),
            ("finetune_epochs", self.finetune_epochs),
            *(
                [("finetune_max_steps", self.finetune_max_steps)]
                if self.finetune_max_steps is not None
                else []
            ),
            ("lora_rank", self.lora_rank),
            ("fewshot_way", self.fewshot_way),
            ("fewshot_queries", self.fewshot_queries),
            ("fewshot_episodes", self.fewshot_episodes),
            ("ctc_epochs", self.ctc_epochs),
            *[("fewshot_shots", shot) for shot in self.fewshot_shots],
        ]:
            if value < 1:
                raise SelfsupError(f"eval.{key} must be a positive integer, got {value}")
        for fraction in self.label_fractions:
            if not 0 < fraction <= 1:
                raise SelfsupError(f"eval.label_fractions must lie in (0, 1], got {fraction}")
        unknown = set(self.protocols) - set(PROTOCOLS)
        if unknown:
            raise SelfsupError(
                f"unknown evaluation protocol {sorted(unknown)[0]!r}; choose from "
                + ", ".join(PROTOCOLS)
            )
        if self.knn_k < 1:
            raise SelfsupError(f"eval.knn_k must be a positive integer, got {self.knn_k}")
        if not (self.knn_temperature > 0 and math.isfinite(self.knn_temperature)):
            raise SelfsupError(f"eval.knn_temperature must be positive, got {self.knn_temperature}")
        if not (self.lora_alpha > 0 and self.lora_lr > 0):
            raise SelfsupError(
                f"eval.lora_alpha and eval.lora_lr must be positive, got {self.lora_alpha} and "
                f"{self.lora_lr}; 16 and 1e-2 work"
            )
        if not (self.ctc_minutes > 0 and 0 < self.ctc_lr < 1 and self.ctc_max_seconds > 0):
            raise SelfsupError(
                f"eval.ctc_minutes, eval.ctc_lr and eval.ctc_max_seconds must be positive (the lr "
                f"below 1), got {self.ctc_minutes}, {self.ctc_lr} and {self.ctc_max_seconds}; "
                "10, 1e-3 and 6 work"
            )
        if not self.ctc_alphabet or len(set(self.ctc_alphabet)) != len(self.ctc_alphabet):
            raise SelfsupError(
                f"eval.ctc_alphabet must list distinct characters, got {self.ctc_alphabet!r}"
            )
        if self.max_train is not None and self.max_train < 1:
            raise SelfsupError(
                f"eval.max_train must be a positive integer or null, got {self.max_train}"
            )
        for key, values in [
            ("protocols", self.protocols),
            ("label_fractions", self.label_fractions),
            ("seeds", self.seeds),
        ]:
            if not values:
                raise SelfsupError(f"eval.{key} must hold at least one value, got an empty list")


@dataclass
class FederatedConfig:
    """A federated run (``selfsup federate``): clients, their data partitions, rounds and the
    aggregation rule. A central run ignores this section."""

    clients: int = 10
    """Clients in the federation; in a simulation each is a Flower virtual client."""
    rounds: int = 10
    local_steps: int = 50
    """Optimizer steps each client takes per round, from the round's global weights. The
    learning-rate schedule runs over rounds × local_steps, as one central run of that length."""
    partition: Literal["iid", "dirichlet", "column"] = "iid"
    """How the training split is divided when clients share one data set: ``iid`` (equal
    random shares), ``dirichlet`` (per class, shares drawn from Dir(alpha); Hsu et al. 2019),
    ``column`` (one client key per sample in ``partition_column``)."""
    alpha: float = 1.0
    """Dirichlet concentration: 0.1 gives each client a few classes, 100 is nearly IID."""
    partition_column: str | None = None
    """A text file with one line per training sample (a device id, a site, a user): samples
    with the same value go to the same client; the distinct values, sorted, are the clients."""
    strategy: Literal["fedavg", "fedprox"] = "fedavg"
    """FedAvg (McMahan et al. 2017), or FedProx (Li et al. 2020) for non-IID clients."""
    proximal_mu: float = 0.01
    """FedProx: weight of the proximal term mu/2·||w − w_global||² each client adds."""
    min_clients: int | None = None
    """A round waits for, samples and needs this many clients; a client that drops in the
    middle of a round is recorded and the round completes with the others if this many
    remain. None: every client."""
    fraction_fit: float = 1.0
    """Share of the connected clients sampled each round (at least ``min_clients``)."""
    simulation: Literal["threads", "ray"] = "threads"
    """How ``selfsup federate`` simulates the clients on one machine: Flower clients in
    threads over loopback gRPC, one training at a time (starts in a second; deterministic),
    or Flower's simulation engine on Ray (clients as actors; for GPUs and many cores, about
    30-60 s to start on 2 loaded cores)."""
    round_timeout: float | None = None
    """Seconds a round waits for its clients before counting the missing ones as dropped."""

    def validate(self) -> None:
        """Positive counts, a concentration above 0, a column file for the column partition."""
        for key, value in [
            ("clients", self.clients),
            ("rounds", self.rounds),
            ("local_steps", self.local_steps),
        ]:
            if value < 1:
                raise SelfsupError(f"federated.{key} must be a positive integer, got {value}")
        if not (self.alpha > 0 and math.isfinite(self.alpha)):
            raise SelfsupError(f"federated.alpha must be positive, got {self.alpha}")
        if self.partition == "column" and not self.partition_column:
            raise SelfsupError(
                "federated.partition=column needs federated.partition_column: a text file with "
                "one client key per training sample"
            )
        if self.min_clients is not None and not 1 <= self.min_clients <= self.clients:
            raise SelfsupError(
                f"federated.min_clients must lie between 1 and clients ({self.clients}), "
                f"got {self.min_clients}"
            )
        if not 0 < self.fraction_fit <= 1:
            raise SelfsupError(
                f"federated.fraction_fit must lie in (0, 1], got {self.fraction_fit}"
            )
        if self.proximal_mu < 0:
            raise SelfsupError(f"federated.proximal_mu must be 0 or more, got {self.proximal_mu}")


@dataclass
class ContinualConfig:
    """A continual run (``selfsup pretrain --resume RUN --data NEW``): it starts from RUN's
    final weights and trains on NEW, mixing in replayed samples of the earlier data. A run
    that continues nothing has ``parent`` None and ignores the rest."""

    parent: str | None = None
    """The run folder whose weights this run started from (written by selfsup)."""
    parent_checkpoint: str | None = None
    """The checkpoint of ``parent`` that was loaded (written by selfsup)."""
    stream: list[dict[str, Any]] = field(default_factory=list)
    """The ``data`` sections of the earlier tasks, oldest first (written by selfsup): with
    this run's ``data`` the whole sequence of data the encoder has seen."""
    replay: int = 1000
    """Replay buffer size: a reservoir sample (Vitter's algorithm R, seeded) of this many
    samples of the earlier tasks' training data; 0 trains on the new data alone. 200-5000 is
    the range of the experience-replay literature; 1000 Fashion-MNIST images are under 1 MB."""
    replay_ratio: float = 0.5
    """Share of every batch drawn from the buffer (experience replay's equal mix of new and
    replayed samples, Chaudhry et al. 2019); lower it to favour the new data."""

    def validate(self) -> None:
        if self.replay < 0:
            raise SelfsupError(f"continual.replay must be 0 or more samples, got {self.replay}")
        if not 0 <= self.replay_ratio < 1:
            raise SelfsupError(
                f"continual.replay_ratio must lie in [0, 1), got {self.replay_ratio}; 0.5 mixes "
                "new and replayed samples equally"
            )


@dataclass
class RunConfig:
    """Everything that defines a pretraining run."""

    method: str = "simclr"
    encoder: str | None = None
    """A registered encoder (``selfsup list``); None takes the data's modality's default
    (convnet for images, transformer-tiny for text)."""
    encoder_args: dict[str, Any] = field(default_factory=dict)
    method_args: dict[str, Any] = field(default_factory=dict)
    """The method's own hyperparameters (see ``selfsup list`` and the method's dataclass)."""
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    federated: FederatedConfig = field(default_factory=FederatedConfig)
    continual: ContinualConfig = field(default_factory=ContinualConfig)
    out: str | None = None
    """Run folder; None makes ``runs/<method>-<data>-<time>``."""

    def validate(self) -> None:
        """What no single section can check: the method, encoder and data fit together, and
        the run's distribution settings fit the machine."""
        from selfsup.engine.accumulate import supports_gradient_cache
        from selfsup.engine.precision import resolve_accelerator
        from selfsup.engine.sharding import CACHE_REFUSED
        from selfsup.methods import method_spec
        from selfsup.modalities import get_modality, modality_of_data

        t = self.train
        if (
            t.sync_batchnorm
            and t.devices * t.num_nodes > 1
            and resolve_accelerator(t.accelerator) == "cpu"
        ):
            raise SelfsupError(
                "train.sync_batchnorm needs GPUs: PyTorch synchronises BatchNorm on CUDA only; "
                "drop --sync-batchnorm for CPU runs"
            )
        if t.num_nodes > 1 and not self.out:
            raise SelfsupError(
                "a multi-node run needs --out: a folder on a filesystem every node shares, so "
                "that all nodes write to the same run"
            )
        spec = method_spec(self.method)
        if (
            t.strategy == "fsdp"
            and t.micro_batch_size is not None
            and t.gradient_cache
            and supports_gradient_cache(spec.build)
        ):
            raise SelfsupError(CACHE_REFUSED)
        data = modality_of_data(self.data.name)
        if data.name not in spec.modalities:
            wanted = get_modality(spec.modalities[0])
            raise SelfsupError(
                f"method {self.method!r} learns from {' or '.join(spec.modalities)} but "
                f"{self.data.name!r} is {data.name} data: pass --data with {wanted.name} "
                f"({', '.join(wanted.sources)})"
            )
        data.check_data(self.data)


T = TypeVar("T")


def parse_duration(text: str | float) -> float:
    """``"15m"`` -> 900.0 seconds. Accepts d, h, m, s parts (``1h30m``), or plain seconds
    (a number, or a string of one)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    text = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([dhms])", text)
    if not parts or "".join(n + u for n, u in parts) != text.replace(" ", ""):
        raise SelfsupError(f"cannot read duration {text!r}: write it like 90s, 15m, 1h30m or 2d")
    scale = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    return sum(float(n) * scale[u] for n, u in parts)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; convert the harmless cases (int -> float, list -> tuple)."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except SelfsupError as error:
                errors.append(error)
        raise errors[0]
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise SelfsupError(
                f"config key {key!r} must be one of {', '.join(map(str, choices))}; got {value!r}"
            )
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            value = [value]
        args = get_args(tp)
        if origin is tuple and args and Ellipsis not in args:  # fixed length: (min, max) pairs
            if len(value) != len(args):
                raise SelfsupError(
                    f"config key {key!r} must be a list of {len(args)} values; got {list(value)!r}"
                )
            return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise SelfsupError(f"config key {key!r} must be a mapping; got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise SelfsupError(f"config key {key!r} must be a mapping; got {value!r}")
        return from_dict(tp, value, prefix=key + ".")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise SelfsupError(f"config key {key!r} must be true or false; got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise SelfsupError(f"config key {key!r} must be a number; got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise SelfsupError(f"config key {key!r} must be an integer; got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise SelfsupError(f"config key {key!r} must be a string; got {value!r}")
    raise SelfsupError(f"config key {key!r}: unsupported type {_type_name(tp)}")


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from a plain mapping, rejecting unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise SelfsupError(
            f"config section {prefix.rstrip('.') or 'top level'!r} must be a mapping"
        )
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    names = list(fields)
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = (
                f" (did you mean '{prefix}{close[0]}'?)"
                if close
                else f"; known keys: {', '.join(names)}"
            )
            raise SelfsupError(f"unknown config key '{prefix}{key}'{hint}")
        if isinstance(value, dict):
            default = _default(fields[key])
            if dataclasses.is_dataclass(default):
                # a partial section changes the named keys of the field's own default
                # (rotation's light augment stays light when only its crop scale is set)
                value = _merged(to_dict(default), value)
        kwargs[key] = _coerce(value, hints[key], prefix + key)
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if check is not None:
        try:
            check()
        except SelfsupError as error:  # name the section the value was read from
            message = str(error)
            raise SelfsupError(
                message if message.startswith(prefix) else prefix + message
            ) from None
    return obj


def _default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


def _merged(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` laid over it, section by section."""
    out = dict(base)
    for key, value in changes.items():
        inner = out.get(key)
        both = isinstance(value, dict) and isinstance(inner, dict)
        out[key] = _merged(inner, value) if both else value
    return out


def to_dict(obj: Any) -> Any:
    """A dataclass as plain YAML-safe data (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with ``safe_load`` (no Python objects, no code)."""
    path = Path(path)
    if not path.is_file():
        raise SelfsupError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise SelfsupError(f"config file {str(path)!r} is not valid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SelfsupError(f"config file {str(path)!r} must hold a mapping of keys to values")
    return data


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply ``train.lr=0.01`` to the nested mapping ``data`` (the value is read as YAML)."""
    if "=" not in assignment:
        raise SelfsupError(
            f"override {assignment!r} must look like key.path=value, e.g. train.lr=0.001"
        )
    key, text = assignment.split("=", 1)
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    node = data
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise SelfsupError(f"override {assignment!r}: {part!r} is not a section")
    node[parts[-1]] = value


def dump_yaml(data: Any) -> str:
    return yaml.safe_dump(to_dict(data), sort_keys=False, default_flow_style=None)


def make_config(
    config: RunConfig | dict | str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    **sections: Any,
) -> RunConfig:
    """A checked ``RunConfig`` from a preset/run YAML, a mapping or a config object, then
    keyword sections (``train={"max_steps": 100}``, ``data="fashion-mnist"``), then
    ``key.path=value`` overrides. The encoder defaults to the data's modality's; the method's
    own arguments are filled with its defaults."""
    from selfsup.methods import method_config
    from selfsup.modalities import modality_of_data

    if isinstance(config, RunConfig):
        data: dict[str, Any] = to_dict(config)
    elif isinstance(config, (str, Path)):
        data = load_yaml(config)
        if sections.get("out") is None and not any(o.startswith("out=") for o in overrides):
            _check_config_file_out(config, data.get("out"))
    else:
        data = dict(config or {})
    for key, value in sections.items():
        if value is None:
            continue
        if key == "data" and isinstance(value, str):
            value = {"name": value}
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    for assignment in overrides:
        apply_override(data, assignment)
    cfg = from_dict(RunConfig, data)
    if cfg.encoder is None:
        cfg.encoder = modality_of_data(cfg.data.name).default_encoder
    cfg.method_args = to_dict(method_config(cfg.method, cfg.method_args))
    return cfg


def _check_config_file_out(path: str | Path, out: Any) -> None:
    """A config *file* may not send the run outside the working folder: an absolute ``out``
    or one with ``..`` must be given explicitly (``--out`` or ``out=`` in Python)."""
    if out is None or not isinstance(out, str):
        return  # a wrong type is reported by from_dict
    target = Path(out)
    if target.is_absolute() or ".." in target.parts or out.startswith("~"):
        raise SelfsupError(
            f"config file {str(path)!r} sets out: {out!r}, a folder outside the current one; "
            "a config file may only name a relative folder below it: pass --out explicitly "
            "to write elsewhere"
        )
