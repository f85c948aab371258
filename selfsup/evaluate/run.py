"""The evaluation run: an encoder (a run folder, an export, or a module) and labelled data in;
the table, eval.json and report.html out.

Probes run on frozen features streamed from the labelled splits; the raw-input baseline,
fine-tuning augmentation and any further results (a language model's perplexity) come from the
data's modality (``selfsup.modalities``).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Subset

from selfsup.config import EvalConfig, RunConfig, from_dict, make_config
from selfsup.data.subset import keep_classes
from selfsup.engine.progress import console
from selfsup.errors import SelfsupError
from selfsup.evaluate.features import dataset_labels, extract_features, input_fn
from selfsup.evaluate.fewshot import fewshot_rows, fewshot_table
from selfsup.evaluate.protocol import (
    PROBES,
    FeatureSet,
    class_balanced_subset,
    evaluate_features,
    format_fraction,
    result_row,
    rows_table,
    write_eval_json,
)
from selfsup.evaluate.report import write_report
from selfsup.export import load_encoder, read_spec
from selfsup.modalities import Modality, modality_of_data, modality_of_encoder


def evaluate_run(
    run: str | Path | nn.Module,
    data: str | None = None,
    *,
    cfg: RunConfig | None = None,
    eval_cfg: EvalConfig | None = None,
    eval_overrides: dict[str, Any] | None = None,
    name: str | None = None,
    out: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Linear probe and kNN at several label fractions (and fine-tuning, if asked) for the
    encoder and the two baselines (the raw input: pixels, TF-IDF, ...; the same encoder at
    random init), plus what the modality adds (a causal language model's perplexity). Prints
    a table, writes eval.json and report.html into the run folder (or ``out``). Every row
    names the data set it was measured on (``data``).

    The settings are ``eval_cfg`` when given, else the run's own ``eval`` section (its
    fractions, seeds, ``max_train``, ...) with ``eval_overrides`` (``selfsup evaluate``'s
    flags) on top."""
    run_dir: Path | None = None
    if isinstance(run, nn.Module):
        encoder = run
        spec: dict[str, Any] = {}
    else:
        run_dir = Path(run).parent if Path(run).is_file() else Path(run)
        encoder = load_encoder(run_dir)
        spec = read_spec(run_dir)
        if cfg is None and (run_dir / "config.yaml").is_file():
            cfg = make_config(run_dir / "config.yaml")
    ev = eval_cfg or _with_overrides(cfg.eval if cfg else EvalConfig(), eval_overrides or {})
    data_spec = data or ev.data or (cfg.data.name if cfg else None)
    if data_spec is None:
        raise SelfsupError("no labelled data to evaluate on: pass --data")
    modality = _data_modality(encoder, data_spec)
    if "robustness" in ev.protocols and not modality.corruptions:
        from selfsup.modalities import no_shifts

        raise no_shifts(modality.name)
    options = modality.eval_options(spec, cfg.data if cfg else None)
    # the run's class subset (a task of a stream) applies to its own data
    classes = cfg.data.classes if cfg is not None and data_spec == cfg.data.name else None
    train_set = keep_classes(
        _labelled(modality, data_spec, "train", run_dir, options), classes, data_spec
    )
    test_set = keep_classes(
        _labelled(modality, data_spec, "test", run_dir, options), classes, data_spec
    )
    name = name or spec.get("method") or (cfg.method if cfg else "encoder")
    seed = cfg.train.seed if cfg else 0

    train_y = dataset_labels(train_set)
    if ev.max_train is not None and len(train_y) > ev.max_train:
        keep = torch.randperm(len(train_y), generator=torch.Generator().manual_seed(seed))
        keep = keep[: ev.max_train]
        train_set, train_y = Subset(train_set, keep.tolist()), train_y[keep]
    test_y = dataset_labels(test_set)
    fresh = random_init_encoder(encoder, seed) if ev.baselines else None
    models = {name: encoder, **({"random-init": fresh} if fresh is not None else {})}

    workers = cfg.data.num_workers if cfg else 0

    def features(model: nn.Module, split: Any) -> torch.Tensor:
        prepare = input_fn(model, split)
        return extract_features(model, split, ev.batch_size, to_input=prepare, num_workers=workers)

    # frozen features are read only by the probes, few-shot and robustness: a run of the
    # trained protocols alone (a fine-tune) does not pay for them
    frozen = bool(set(ev.protocols) & {*PROBES, "fewshot", "robustness"})
    with console.status("extracting features"):
        sets = {
            label: FeatureSet(
                features(model, train_set), train_y, features(model, test_set), test_y
            )
            for label, model in (models.items() if frozen else ())
        }

    probes = [p for p in ev.protocols if p in PROBES]
    rows: list[dict[str, Any]] = []
    if probes:
        with console.status("evaluating") as status:
            rows = evaluate_features(
                sets,
                fractions=ev.label_fractions,
                seeds=ev.seeds,
                protocols=probes,  # type: ignore[arg-type]
                k=ev.knn_k,
                temperature=ev.knn_temperature,
                progress=lambda text: status.update(f"evaluating: {text}"),
            )
            if ev.baselines:
                rows += modality.raw_baseline(
                    train_set,
                    test_set,
                    ev,
                    probes,
                    lambda text: status.update(f"evaluating: {text}"),
                )
    target = Path(out) if out else run_dir
    if "fewshot" in ev.protocols:
        with console.status("few-shot episodes"):
            episodes = {label: (fs.train_x, fs.test_x) for label, fs in sets.items()}
            if ev.baselines:
                episodes["raw"] = modality.raw_features(train_set, test_set, ev)
            rows += fewshot_rows(
                episodes,
                train_y,
                test_y,
                n_way=ev.fewshot_way,
                shots=ev.fewshot_shots,
                queries=ev.fewshot_queries,
                episodes=ev.fewshot_episodes,
                seed=seed,
            )
    trained: dict[str, nn.Module] = {}
    if TRAINED_PROTOCOLS & set(ev.protocols):
        precision = cfg.train.precision if cfg else "auto"
        rows += _trained_rows(
            models,
            modality,
            train_set,
            train_y,
            test_set,
            ev,
            seed,
            precision,
            workers,
            export=_LoraExport(target / "lora", run_dir, spec) if target is not None else None,
            keep=trained,
        )
    if "robustness" in ev.protocols:
        with console.status("robustness") as status:
            rows += _robustness(
                {**models, **trained},
                sets,
                modality,
                train_set,
                test_set,
                ev,
                seed,
                workers,
                lambda text: status.update(f"robustness: {text}"),
            )
    rows = [{**row, "data": data_spec} for row in rows]  # what `selfsup compare` matches runs by
    if rows:  # none when only a modality's own protocol ran (ctc)
        console.print(rows_table(rows, title=f"{name} on {data_spec} (test accuracy, %)"))
    if any(row["protocol"] == "fewshot" for row in rows):
        console.print(fewshot_table(rows))
    if any(row["protocol"] == "robustness" for row in rows):
        from selfsup.evaluate.robustness import robustness_table

        console.print(robustness_table(rows))
    text_spec = cfg.data.name if cfg else data_spec
    extra = modality.extra_evaluation(models, text_spec, run_dir, options, ev)
    for file_name, extra_rows in extra.items():
        for row in extra_rows:
            console.print(_extra_line(row))
        if target is not None:
            target.mkdir(parents=True, exist_ok=True)
            (target / file_name).write_text(json.dumps(extra_rows, indent=2))
    if target is not None:
        target.mkdir(parents=True, exist_ok=True)
        write_eval_json(rows, target / "eval.json")
        if ev.report:
            with console.status("writing report.html (t-SNE map)"):
                path = write_report(
                    target / "report.html",
                    title=f"selfsup: {name} on {data_spec}",
                    rows=rows,
                    metrics_csv=_file(run_dir, "metrics.csv"),
                    embeddings=(
                        sets[name].test_x if name in sets else features(encoder, test_set)
                    ).numpy(),
                    embedding_labels=test_y.numpy(),
                    class_names=test_set.class_names,
                    config_text=(
                        p.read_text() if (p := _file(run_dir, "config.yaml")) is not None else None
                    ),
                )
            console.print(f"report: {path}")
    return rows


def _with_overrides(base: EvalConfig, overrides: dict[str, Any]) -> EvalConfig:
    """``base`` with the keys of ``overrides`` replaced, checked as a config file's are."""
    if not overrides:
        return base
    return from_dict(EvalConfig, {**dataclasses.asdict(base), **overrides}, prefix="eval.")


def _extra_line(row: dict[str, Any]) -> str:
    """One printed line of a modality's further result (``encoder: perplexity 41.2 on fortunes``)."""
    measures = [k for k in row if k not in ("encoder", "data") and isinstance(row[k], float)]
    first = measures[0] if measures else None
    digits = 3 if first and abs(row[first]) < 1 else 1  # an MRR in [0, 1]; a perplexity
    value = f"{first} {row[first]:.{digits}f}" if first else json.dumps(row)
    return f"{row.get('encoder')}: {value} on {row.get('data')}"


def _file(folder: Path | None, name: str) -> Path | None:
    return folder / name if folder is not None and (folder / name).is_file() else None


def _data_modality(encoder: nn.Module, data_spec: str) -> Modality:
    """The modality of ``data_spec``, checked against what ``encoder`` reads."""
    modality = modality_of_data(data_spec)
    reads = modality_of_encoder(encoder, fallback=modality)
    if reads is not modality:
        raise SelfsupError(
            f"the encoder reads {reads.name} but {data_spec!r} is {modality.name} data: "
            f"pass --data with {reads.name} data"
        )
    return modality


def _labelled(
    modality: Modality, spec: str, split: str, folder: Path | None, options: dict[str, Any]
) -> Any:
    dataset = modality.load(spec, split, folder=folder, **options)  # type: ignore[arg-type]
    if not dataset.has_labels:
        raise SelfsupError(
            f"data set {spec!r} has no labels, so it cannot be evaluated: pass --data with a "
            "labelled set (images: a folder with one subfolder per class, an npz with 'labels', "
            "digits or fashion-mnist; text: fortunes, or text:FILE.jsonl with a label field)"
        )
    return dataset


TRAINED_PROTOCOLS = {"finetune", "supervised", "lora"}
"""The protocols that train a model on the labels (each at ``eval.finetune_fractions``)."""


@dataclass
class _LoraExport:
    """Where the LoRA adapter goes (``folder``), and the export it adapts (``run_dir`` and
    its encoder.yaml ``spec``), for writing the merged encoder beside it."""

    folder: Path
    run_dir: Path | None
    spec: dict[str, Any]


def _trained_rows(
    models: dict[str, nn.Module],
    modality: Modality,
    train_set: Any,
    train_y: torch.Tensor,
    test_set: Any,
    ev: EvalConfig,
    seed: int,
    precision: str = "auto",
    num_workers: int = 0,
    export: _LoraExport | None = None,
    keep: dict[str, nn.Module] | None = None,
) -> list[dict[str, Any]]:
    """Rows of the protocols that train on the labels, each at each of
    ``ev.finetune_fractions`` (a class-balanced ``Subset`` of ``train_set``, whose labels are
    ``train_y``), on the engine, with the modality's fine-tuning augmentation:

    - ``finetune``: every encoder of ``models`` (the first is the evaluated one) and a linear
      head, trained end to end;
    - ``supervised``: the same architecture from a fresh initialisation, trained the same way
      with MAE's near-zero head: the supervised reference;
    - ``lora``: the evaluated encoder frozen, LoRA adapters (peft) and the head trained; the
      last fraction's adapter is saved into ``export.folder`` (and merged, if asked).

    The supervised reference trained on the last fraction goes into ``keep`` (as
    "supervised"), for the protocols that compare encoders' features (robustness).
    """
    from dataclasses import replace

    from selfsup.config import parse_duration
    from selfsup.evaluate.finetune import FinetuneConfig, finetune
    from selfsup.evaluate.lora import add_lora

    ft = FinetuneConfig(
        epochs=ev.finetune_epochs,
        max_time=parse_duration(ev.finetune_max_time) if ev.finetune_max_time else None,
        max_steps=ev.finetune_max_steps,
        batch_size=ev.finetune_batch_size,
        lr=ev.finetune_lr,
        layer_decay=ev.finetune_layer_decay if ev.finetune_layer_decay < 1 else None,
        head_init=ev.finetune_head,
        seed=seed,
        precision=precision,  # type: ignore[arg-type]
    )
    name, encoder = next(iter(models.items()))
    runs: list[tuple[str, str, nn.Module, FinetuneConfig, Any]] = []
    if "finetune" in ev.protocols:
        runs += [(label, "finetune", model, ft, None) for label, model in models.items()]
    if "supervised" in ev.protocols:
        fresh = models.get("random-init") or random_init_encoder(encoder, seed)
        runs.append(("supervised", "supervised", fresh, replace(ft, head_init="small"), None))
    if "lora" in ev.protocols:
        lora = partial(add_lora, rank=ev.lora_rank, alpha=ev.lora_alpha)
        runs.append((name, "lora", encoder, replace(ft, lr=ev.lora_lr), lora))
    rows = []
    for label, protocol, model, cfg, adapter in runs:
        for fraction in ev.finetune_fractions:
            subset = Subset(
                train_set, class_balanced_subset(train_y.numpy(), fraction, seed).tolist()
            )
            console.print(f"{protocol}: {label} on {format_fraction(fraction)} of the labels")
            result = finetune(
                model,
                subset,
                test_set,
                cfg,
                to_input=modality.to_input(model),
                augment=modality.finetune_augment,
                input_key=modality.input_key,
                num_classes=int(train_y.max()) + 1,
                num_workers=num_workers,
                description=f"{protocol} {label}",
                adapter=adapter,
                return_model=True,
            )
            if keep is not None and protocol == "supervised":
                keep["supervised"] = result["encoder"]
            extra: dict[str, Any] = {}
            if adapter is not None:
                extra = {
                    "rank": ev.lora_rank,
                    "alpha": ev.lora_alpha,
                    "trainable_share": result["trainable_params"] / result["total_params"],
                }
                if export is not None and fraction == ev.finetune_fractions[-1]:
                    extra["adapter"] = str(_save_lora(result["encoder"], export, ev, fraction))
            rows.append(
                result_row(
                    label,
                    protocol,
                    fraction,
                    [result["accuracy"]],
                    num_train=len(subset),
                    num_test=result["num_test"],
                    epochs=result["epochs"],
                    seconds=result["seconds"],
                    trainable_params=result["trainable_params"],
                    **extra,
                )
            )
    return rows


def _robustness(
    models: dict[str, nn.Module],
    sets: dict[str, FeatureSet],
    modality: Modality,
    train_set: Any,
    test_set: Any,
    ev: EvalConfig,
    seed: int,
    workers: int,
    progress: Any,
) -> list[dict[str, Any]]:
    """The clean linear probe (100% of the labels) of each encoder, and of the raw input,
    scored on each of the modality's corruptions of the test set at severities 1-5."""
    from selfsup.evaluate.robustness import fit_probe, robustness_rows

    test_y = dataset_labels(test_set)
    train_y = dataset_labels(train_set)
    probes = {}
    for label, model in models.items():

        def extract(split: Any, model: nn.Module = model) -> torch.Tensor:
            prepare = input_fn(model, split)
            return extract_features(
                model, split, ev.batch_size, to_input=prepare, num_workers=workers
            )

        if label in sets:
            train_x, test_x = sets[label].train_x, sets[label].test_x
        else:
            train_x, test_x = extract(train_set), extract(test_set)
        probes[label] = (extract, *fit_probe(train_x, train_y, test_x, test_y, seed))
    if ev.baselines:
        raw_train, raw_test = modality.raw_features(train_set, test_set, ev)

        def raw(split: Any) -> torch.Tensor:
            return modality.raw_features(train_set, split, ev)[1]

        probes["raw"] = (raw, *fit_probe(raw_train, train_y, raw_test, test_y, seed))
    return robustness_rows(
        probes,
        lambda kind, severity: modality.corrupted(test_set, kind, severity, seed),
        modality.corruptions,
        progress=progress,
    )


def _save_lora(adapted: Any, export: _LoraExport, ev: EvalConfig, fraction: float) -> Path:
    """Write the adapter (and, with ``ev.lora_merge``, the merged encoder with the files its
    export names, such as a tokenizer) into ``export.folder``; returns the adapter's path."""
    from selfsup.evaluate.lora import merge_lora, save_adapter
    from selfsup.export import export_encoder

    path = save_adapter(adapted, export.folder, label_fraction=fraction)
    if ev.lora_merge:
        merged_dir = export.folder / "merged"
        info = {k: v for k, v in export.spec.items() if k not in ("encoder", "embed_dim")}
        export_encoder(merge_lora(adapted), merged_dir, **info, adapted_by="lora")
        named = export.spec.get("input", {}).values() if export.run_dir is not None else []
        for file_name in named:
            if isinstance(file_name, str) and (export.run_dir / file_name).is_file():  # type: ignore[operator]
                shutil.copy(export.run_dir / file_name, merged_dir / file_name)  # type: ignore[operator]
        console.print(f"LoRA: adapter {path}, merged encoder {merged_dir}")
    else:
        console.print(f"LoRA: adapter {path}")
    return path


def random_init_encoder(encoder: nn.Module, seed: int) -> nn.Module:
    """The same architecture at the initialisation a fresh run with ``seed`` would draw."""
    from selfsup.encoders import build_encoder

    build_args = getattr(encoder, "build_args", None)
    if build_args is None:
        fresh = copy.deepcopy(encoder)
        for module in fresh.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
        return fresh
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build_encoder(**build_args).eval()


def embed(
    run: str | Path,
    data: str,
    split: str = "test",
    out: str | Path | None = None,
    batch_size: int = 512,
) -> np.ndarray:
    """Features (N, D) of a data set under an exported encoder; saved as ``.npy`` when ``out``
    is given (with ``.labels.npy`` beside it when the data has labels)."""
    spec = read_spec(run)
    encoder = load_encoder(run)
    folder = Path(run).parent if Path(run).is_file() else Path(run)
    modality = _data_modality(encoder, data)
    dataset = modality.load(data, split, folder=folder, **modality.eval_options(spec, None))  # type: ignore[arg-type]
    modality.check_encoder(encoder, dataset, data)
    features = extract_features(encoder, dataset, batch_size).numpy()
    if out is not None:
        np.save(out, features)
        if dataset.has_labels:
            np.save(Path(out).with_suffix(".labels.npy"), dataset_labels(dataset).numpy())
    return features
