"""The ``selfsup`` command: list, pretrain, federate, evaluate, compare, embed, export,
attention, generate, zero-shot, word-vectors, show-masking, pack, demo.

Every option maps onto a field of the typed config (``selfsup/config.py``); ``--set
key.path=value`` reaches any field that has no flag of its own. User errors print one line
and exit with status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

from selfsup.config import PROTOCOLS
from selfsup.errors import SelfsupError
from selfsup.modalities import MODALITIES

PRESETS = Path(__file__).parent / "configs"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not a usage dump
        raise SelfsupError(f"{message} (see `{self.prog} --help`)")


def _preset(name: str) -> Path:
    """A config path, or the name of a shipped preset (``selfsup list`` shows them)."""
    path = Path(name)
    if path.is_file():
        return path
    packaged = PRESETS / (name if name.endswith(".yaml") else name + ".yaml")
    if packaged.is_file():
        return packaged
    known = ", ".join(sorted(p.stem for p in PRESETS.glob("*.yaml")))
    raise SelfsupError(f"config {name!r} is neither a file nor a shipped preset ({known})")


def _data_help() -> str:
    """Every modality's sources, from the registry, so a new modality shows up here."""
    kinds = "; ".join(f"{name}: {' | '.join(m.sources)}" for name, m in MODALITIES.items())
    return f"{kinds} (a user's own files as PREFIX:PATH, e.g. folder:PATH; `selfsup list` says what each is)"


def _add_train_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("what to train")
    g.add_argument(
        "--config", help="a YAML preset (name or path) or a run's config.yaml to reproduce it"
    )
    g.add_argument("--method", help="pretext method, e.g. simclr (see `selfsup list`)")
    g.add_argument(
        "--encoder",
        help="backbone: convnet is fast on a CPU; resnet18 for GPUs (see `selfsup list`)",
    )
    g.add_argument(
        "--data",
        help=_data_help(),
    )
    g.add_argument(
        "--image-size",
        type=int,
        help="centre-crop and resize images to this square size, e.g. 32 or 64 (needed for folders of mixed sizes)",
    )
    g.add_argument(
        "--skip-bad",
        action="store_true",
        default=None,
        help="skip what cannot be read (image files, clips, ragged or non-numeric series rows, "
        "all-missing series, source files that are not UTF-8 or do not parse) instead of "
        "stopping; they are counted in the log",
    )
    g.add_argument(
        "--num-workers",
        type=int,
        help="loader processes that decode files: 0 for in-memory sets, 2-8 for folders",
    )
    g.add_argument(
        "--max-length",
        type=int,
        help="text: tokens per sample incl. [CLS]/[SEP] (default 128); cost grows as its square",
    )
    g.add_argument(
        "--tokenizer",
        help="text: wordpiece (BERT) | bpe | byte-bpe (GPT-2) | word (whole words seen 5+ "
        "times, for word2vec), trained on your texts; or a tokenizer.json to reuse",
    )
    g.add_argument(
        "--vocab-size",
        type=int,
        help="text: vocabulary of the trained tokenizer; 8000 for a few MB of text, 30000 for GBs",
    )
    g = p.add_argument_group("how long and how fast")
    g.add_argument("--max-steps", type=int, help="stop after this many optimizer steps")
    g.add_argument("--max-epochs", type=int, help="stop after this many passes over the data")
    g.add_argument(
        "--max-time", help="wall-clock budget such as 15m or 2h; the schedule is fitted to it"
    )
    g.add_argument(
        "--batch-size",
        type=int,
        help="per process; 256 is a good start, contrastive methods like more",
    )
    g.add_argument(
        "--lr", type=float, help="peak learning rate; default: the optimizer's standard × batch/256"
    )
    g.add_argument(
        "--optimizer", choices=["adamw", "lars", "sgd"], help="adamw up to batch ~1024, lars beyond"
    )
    g.add_argument(
        "--precision",
        choices=["auto", "32-true", "bf16-mixed", "16-mixed"],
        help="auto = bf16 where the hardware has it, else float32",
    )
    g.add_argument(
        "--micro-batch-size",
        type=int,
        help="split each batch into micro-batches of this size to fit memory; contrastive methods "
        "keep the exact big-batch loss with the gradient cache (e.g. --batch-size 4096 "
        "--micro-batch-size 256)",
    )
    g.add_argument(
        "--grad-checkpointing",
        action="store_true",
        default=None,
        help="recompute ViT and text Transformer blocks in the backward pass: about 30%% slower, far less "
        "activation memory; use it when a batch does not fit",
    )
    g.add_argument(
        "--sync-batchnorm",
        action="store_true",
        default=None,
        help="BatchNorm statistics over the global batch in multi-GPU runs (GPU only); helps "
        "when the per-GPU batch is small (< 64)",
    )
    g.add_argument(
        "--accelerator",
        choices=["auto", "cpu", "cuda", "gpu", "mps"],
        help="auto = the GPU when there is one, else the CPU",
    )
    g.add_argument("--devices", type=int, help="processes/GPUs on this machine (DDP when > 1)")
    g.add_argument(
        "--num-nodes", type=int, help="machines in a multi-node run (launch with torchrun or srun)"
    )
    g.add_argument(
        "--strategy", choices=["auto", "ddp", "ddp_spawn", "fsdp"], help="distribution strategy"
    )
    g.add_argument("--seed", type=int)
    g.add_argument("--out", help="run folder (default runs/<method>-<data>-<time>)")
    g.add_argument(
        "--resume", help="continue a run folder (or a checkpoint file) exactly where it stopped"
    )
    g.add_argument("--no-eval", action="store_true", help="skip the evaluation after pretraining")
    g.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any config field, e.g. --set method_args.temperature=0.1 --set train.checkpoint_every=200",
    )


def _sections(args: argparse.Namespace) -> dict[str, Any]:
    train = {
        k: getattr(args, k)
        for k in (
            "max_steps",
            "max_epochs",
            "max_time",
            "batch_size",
            "lr",
            "optimizer",
            "precision",
            "accelerator",
            "devices",
            "num_nodes",
            "strategy",
            "seed",
            "micro_batch_size",
            "grad_checkpointing",
            "sync_batchnorm",
        )
    }
    data = {
        "name": args.data,
        "image_size": args.image_size,
        "skip_bad": args.skip_bad,
        "num_workers": args.num_workers,
        "max_length": args.max_length,
        "tokenizer": args.tokenizer,
        "vocab_size": args.vocab_size,
    }
    sections: dict[str, Any] = {
        "method": args.method,
        "encoder": args.encoder,
        "out": args.out,
        "train": {k: v for k, v in train.items() if v is not None},
        "data": {k: v for k, v in data.items() if v is not None},
    }
    if args.max_time and args.max_steps is None and args.max_epochs is None:
        sections["train"].update(max_steps=None, max_epochs=None)
    return sections


def cmd_pretrain(args: argparse.Namespace) -> None:
    from selfsup.api import pretrain

    config = _preset(args.config) if args.config else None
    sections = _sections(args)
    if args.replay is not None:
        sections["continual"] = {"replay": args.replay}
    run = pretrain(
        config,
        resume=args.resume,
        evaluate=not args.no_eval,
        overrides=args.overrides,
        **sections,
    )
    r = run.train
    if run.rank == 0:
        print(
            f"run folder: {run.run_dir}  ({r.steps} steps, stopped by {r.stopped_by}, {r.seconds:.0f} s, {r.precision})"
        )


def _federated_section(args: argparse.Namespace) -> dict[str, Any]:
    """The ``federated`` config section from the flags; ``--partition`` reads ``iid``,
    ``dirichlet:ALPHA`` or ``column:FILE``."""
    fed: dict[str, Any] = {
        "clients": args.clients,
        "rounds": args.rounds,
        "local_steps": args.local_steps,
        "strategy": args.aggregation,
        "proximal_mu": args.mu,
        "min_clients": args.min_clients,
        "round_timeout": args.round_timeout,
        "simulation": args.simulation,
    }
    if args.partition:
        scheme, _, value = args.partition.partition(":")
        if scheme not in ("iid", "dirichlet", "column") or (scheme != "iid") != bool(value):
            raise SelfsupError(
                f"--partition {args.partition!r}: use iid, dirichlet:ALPHA (e.g. dirichlet:0.1) "
                "or column:FILE (one client key per training sample)"
            )
        fed["partition"] = scheme
        if scheme == "dirichlet":
            try:
                fed["alpha"] = float(value)
            except ValueError:
                raise SelfsupError(
                    f"--partition dirichlet:ALPHA needs a number, got {value!r}"
                ) from None
        elif scheme == "column":
            fed["partition_column"] = value
    return {k: v for k, v in fed.items() if v is not None}


def cmd_federate(args: argparse.Namespace) -> None:
    if args.join:
        from selfsup.federated import join

        if args.client_id is None:
            raise SelfsupError(
                "--join needs --client-id K: which share of the data this client holds"
            )
        join(args.join, args.client_id, folder=args.out)
        return
    from selfsup.federated import federate

    sections = _sections(args)
    sections["federated"] = _federated_section(args)
    config = _preset(args.config) if args.config else None
    run = federate(
        config,
        serve=args.serve,
        resume=args.resume,
        evaluate=not args.no_eval,
        overrides=args.overrides,
        **sections,
    )
    print(f"run folder: {run.run_dir}  ({run.train.steps} steps; rounds in federated.json)")


def cmd_demo(args: argparse.Namespace) -> None:
    from selfsup.api import pretrain

    started = time.perf_counter()
    overrides = list(args.overrides)
    run = pretrain(_preset("demo"), overrides=overrides, out=args.out)
    print(
        f"demo finished in {time.perf_counter() - started:.0f} s; run folder {run.run_dir} "
        f"(report.html, eval.json, encoder.safetensors)"
    )


def cmd_evaluate(args: argparse.Namespace) -> None:
    from selfsup.api import evaluate_run
    from selfsup.config import EvalConfig, from_dict

    ev: dict[str, Any] = {}
    if args.fractions:
        ev["label_fractions"] = [float(x) for x in args.fractions.split(",")]
    if args.seeds:
        ev["seeds"] = [int(x) for x in args.seeds.split(",")]
    if args.no_baselines:
        ev["baselines"] = False
    if args.max_train:
        ev["max_train"] = args.max_train
    if args.no_report:
        ev["report"] = False
    if args.finetune:
        ev["protocols"] = ["linear", "knn", "finetune"]
    if args.protocol:
        ev["protocols"] = list(dict.fromkeys(args.protocol))
    if args.finetune_max_time:
        ev["finetune_max_time"] = args.finetune_max_time
    if args.finetune_fractions:
        ev["finetune_fractions"] = [float(x) for x in args.finetune_fractions.split(",")]
    for key in (
        "finetune_epochs",
        "finetune_max_steps",
        "lora_rank",
        "lora_alpha",
        "fewshot_episodes",
        "ctc_minutes",
        "ctc_data",
    ):
        if getattr(args, key) is not None:
            ev[key] = getattr(args, key)
    if args.merge_lora:
        ev["lora_merge"] = True
    # the flags change the run's own eval settings (fractions, seeds, max_train, ...) and
    # nothing else; from_dict checks them as it checks a config file
    from_dict(EvalConfig, ev, prefix="eval.")
    evaluate_run(args.run, args.data, eval_overrides=ev, out=args.out)


def cmd_compare(args: argparse.Namespace) -> None:
    from selfsup.api import compare_runs

    comparison = compare_runs(args.runs, out=args.out)
    print(comparison.markdown())
    print(f"wrote {', '.join(str(p) for p in comparison.written)}")


def cmd_generate(args: argparse.Namespace) -> None:
    from selfsup.api import generate_text

    for number, text in enumerate(
        generate_text(
            args.run,
            args.prompt,
            num=args.num,
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_k=args.top_k or None,
            seed=args.seed,
        ),
        start=1,
    ):
        print(f"--- sample {number}\n{text}")


def cmd_zero_shot(args: argparse.Namespace) -> None:
    from selfsup.api import zero_shot_images

    classes = args.classes.split(",") if args.classes else None
    result = zero_shot_images(args.run, args.data, classes=classes, split=args.split, out=args.out)
    counts = ", ".join(f"{name} {n}" for name, n in result["predicted_counts"].items())
    print(f"{result['images']} images over {len(result['classes'])} classes; predicted: {counts}")
    if "accuracy" in result:
        print(
            f"zero-shot accuracy {result['accuracy']:.1f}% on the {result['labelled']} labelled "
            f"images, mean per class {result['balanced_accuracy']:.1f}% (chance "
            f"{result['chance']:.1f}%)"
        )
    if args.out:
        print(f"predictions: {args.out}")


def cmd_show_masking(args: argparse.Namespace) -> None:
    from selfsup.evaluate.masking import show_masking

    if args.images < 1:
        raise SelfsupError(f"--images must be a positive number, got {args.images}")
    path = show_masking(
        args.run, args.out, images=args.images, data=args.data, split=args.split, seed=args.seed
    )
    print(f"wrote {path}")


def cmd_word_vectors(args: argparse.Namespace) -> None:
    import json

    from selfsup.evaluate.words import save_word2vec_format, word_benchmarks, word_vectors

    words, vectors = word_vectors(args.run)
    out = Path(args.out) if args.out else Path(args.run) / "vectors.txt"
    save_word2vec_format(words, vectors, out)
    print(f"wrote {out}: {len(words)} words × {vectors.shape[1]} (word2vec text format)")
    if args.no_eval:
        return
    scores = word_benchmarks(words, vectors)
    for name, result in scores.items():
        shown = ", ".join(f"{k} {v:.3f}" for k, v in result.items())
        print(f"{name}: {shown}")
    path = out.with_name("words.json")
    path.write_text(json.dumps(scores, indent=1))
    print(f"wrote {path}")


def cmd_embed(args: argparse.Namespace) -> None:
    from selfsup.api import embed

    features = embed(args.run, args.data, args.split, args.out)
    print(f"wrote {args.out}: {features.shape[0]} × {features.shape[1]} float32 features")


def cmd_export(args: argparse.Namespace) -> None:
    from selfsup.api import export_checkpoint

    path = export_checkpoint(args.run, args.checkpoint, args.out)
    print(f"exported {path} and {path.with_name('encoder.yaml')}")
    if args.format == "onnx":
        from selfsup.export import load_encoder
        from selfsup.onnx_export import ONNX_FILE, export_onnx

        check = export_onnx(load_encoder(path.parent), path.with_name(ONNX_FILE))
        print(
            f"exported {check['path']} (dynamic batch); onnxruntime vs PyTorch: max abs "
            f"difference {check['max_abs_diff']:.2e} (largest feature {check['max_abs_feature']:.2f})"
        )


def cmd_attention(args: argparse.Namespace) -> None:
    import torch

    from selfsup.evaluate.attention import check_vit, load_run_encoder, write_attention_png
    from selfsup.export import read_spec
    from selfsup.modalities import modality_of_data

    if args.images < 1:
        raise SelfsupError(f"--images must be a positive number, got {args.images}")
    encoder = load_run_encoder(args.run)
    check_vit(encoder)
    build = getattr(encoder, "build_args", {})
    data = args.data or _run_data(Path(args.run))
    modality = modality_of_data(data)
    folder = Path(args.run) if Path(args.run).is_dir() else Path(args.run).parent
    options = modality.eval_options(
        read_spec(folder) if (folder / "encoder.yaml").is_file() else {}, None
    )
    options.update(image_size=build.get("image_size"))
    dataset = modality.load(data, args.split, folder=folder, **options)
    modality.check_encoder(encoder, dataset, data)
    count = min(args.images, len(dataset))
    images = torch.stack([dataset[i][modality.input_key] for i in range(count)])
    path = write_attention_png(
        encoder, images, args.out, title=f"{Path(args.run).name}: [CLS] attention, last block"
    )
    print(f"wrote {path}: {len(images)} image(s) × {build.get('num_heads', '?')} heads + mean")


def _run_data(run: Path) -> str:
    """The data spec a run was trained on, from its config.yaml or its export."""
    from selfsup.config import load_yaml
    from selfsup.export import read_spec

    folder = run if run.is_dir() else run.parent
    if (folder / "config.yaml").is_file():
        return str(load_yaml(folder / "config.yaml").get("data", {}).get("name", "digits"))
    data = read_spec(folder).get("data")
    if not data:
        raise SelfsupError(f"{run} does not say what data it was trained on: pass --data")
    return str(data)


def cmd_pack(args: argparse.Namespace) -> None:
    from selfsup.data.pack import pack

    started = time.perf_counter()
    index = pack(
        args.source,
        args.out_dir,
        format=args.format,
        image_size=args.image_size,
        shard_size=args.shard_size,
        skip_bad=args.skip_bad,
        num_workers=args.num_workers,
    )
    counts = " + ".join(
        f"{s['count']:,} {name} in {len(s['shards'])} shard(s)"
        for name, s in index["splits"].items()
    )
    what = str(index.get("modality", "samples"))
    if "channels" in index:
        what = "x".join(str(x) for x in (index["channels"], *index["image_size"])) + " uint8"
    skipped = f", {index['skipped']} unreadable file(s) skipped" if index["skipped"] else ""
    prefix = "wds" if args.format == "wds" else "shards"
    print(
        f"packed {counts} ({what}) into {args.out_dir} in "
        f"{time.perf_counter() - started:.0f} s{skipped}; train with --data {prefix}:{args.out_dir}"
    )


def cmd_list(args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    from selfsup.encoders import ENCODERS
    from selfsup.methods import METHODS
    from selfsup.modalities import all_sources

    console = Console()
    table = Table(title="methods", title_justify="left")
    for col in ("name", "modality", "what it learns from", "paper"):
        table.add_column(col)
    for name, spec in METHODS.items():
        table.add_row(name, ", ".join(spec.modalities), spec.description, spec.paper)
    console.print(table)
    table = Table(title="encoders", title_justify="left")
    table.add_column("name")
    table.add_column("modality")
    table.add_column("description")
    for name, enc in ENCODERS.items():
        table.add_row(name, enc.modality, enc.description)
    console.print(table)
    table = Table(title="data sets (--data)", title_justify="left")
    table.add_column("name")
    table.add_column("description")
    for name, text in all_sources().items():
        table.add_row(name, text)
    console.print(table)
    table = Table(title="presets (--config)", title_justify="left")
    table.add_column("name")
    table.add_column("reproduces")
    for path in sorted(PRESETS.glob("*.yaml")):
        first = path.read_text().splitlines()[0].lstrip("# ") if path.read_text() else ""
        table.add_row(path.stem, first)
    console.print(table)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="selfsup",
        description="Self-supervised pretraining, evaluation and export for any modality.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show library log messages")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("list", help="methods, encoders, data sets and presets, one line each")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser(
        "pretrain", help="pretrain an encoder on unlabeled data, then evaluate and export it"
    )
    _add_train_flags(p)
    p.add_argument(
        "--replay",
        type=int,
        metavar="N",
        help="--resume RUN with other --data (or data.classes) starts a new continual run from "
        "RUN's weights; it replays N samples of the earlier data (default 1000; 0 = none) in "
        "half of each batch (--set continual.replay_ratio=0.25 for a quarter)",
    )
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser(
        "federate",
        help="pretrain across clients whose data never leaves them (Flower): a simulation on "
        "this machine, or --serve / --join for a server and client processes",
    )
    _add_train_flags(p)
    g = p.add_argument_group("federation")
    g.add_argument("--clients", type=int, help="clients in the federation (default 10)")
    g.add_argument("--rounds", type=int, help="communication rounds (default 10)")
    g.add_argument(
        "--local-steps",
        type=int,
        help="optimizer steps per client per round (default 50); fewer for very non-IID data",
    )
    g.add_argument(
        "--partition",
        help="iid (default) | dirichlet:ALPHA (per-class shares ~ Dir(ALPHA); 0.1 = a few classes "
        "per client) | column:FILE (one client key per training sample)",
    )
    g.add_argument(
        "--aggregation",
        choices=["fedavg", "fedprox"],
        help="fedavg (default); fedprox adds a proximal term that helps on non-IID clients",
    )
    g.add_argument("--mu", type=float, help="FedProx proximal weight (default 0.01; 0.001-0.1)")
    g.add_argument(
        "--min-clients",
        type=int,
        help="a round needs this many clients; one that drops mid-round is recorded and the "
        "round completes with the others (default: all)",
    )
    g.add_argument("--round-timeout", type=float, help="seconds a round waits for its clients")
    g.add_argument(
        "--simulation",
        choices=["threads", "ray"],
        help="threads (default: Flower clients over loopback gRPC in this process) or ray "
        "(Flower's simulation engine; for GPUs and many cores)",
    )
    g.add_argument(
        "--serve", metavar="HOST:PORT", help="run the Flower server for client processes"
    )
    g.add_argument(
        "--join", metavar="HOST:PORT", help="run one client of the federation served there"
    )
    g.add_argument("--client-id", type=int, help="with --join: this client's number, 0..clients-1")
    p.set_defaults(func=cmd_federate)

    p = sub.add_parser(
        "evaluate", help="linear probe, kNN and label efficiency of a run's encoder vs baselines"
    )
    p.add_argument(
        "run", help="a run folder (or a folder holding encoder.safetensors + encoder.yaml)"
    )
    p.add_argument("--data", help="labelled data; default: the run's own data set")
    p.add_argument("--fractions", help="label fractions, e.g. 0.01,0.1,1 (class-balanced subsets)")
    p.add_argument("--seeds", help="seeds for the subsets, e.g. 0,1,2: the table shows mean ± std")
    p.add_argument("--max-train", type=int, help="use at most this many labelled training samples")
    p.add_argument(
        "--no-baselines", action="store_true", help="skip the raw-input and random-init baselines"
    )
    p.add_argument("--no-report", action="store_true", help="skip report.html (and its t-SNE map)")
    p.add_argument(
        "--finetune",
        action="store_true",
        help="also fine-tune the whole encoder with a linear head (and the random-init one): "
        "the fair test of masked models (MAE, BERT), which probe poorly when frozen",
    )
    p.add_argument("--finetune-max-time", help="wall-clock cap per fine-tuning run, e.g. 5m")
    p.add_argument(
        "--protocol",
        action="append",
        choices=list(PROTOCOLS),
        help="run these protocols instead of the default linear + knn (repeat the flag): "
        "finetune (whole encoder), supervised (the architecture trained from scratch on the "
        "labels, the reference), lora (peft adapters; --merge-lora writes the merged encoder), "
        "fewshot (5-way 1- and 5-shot episodes), robustness (the probe on shifted inputs), ctc "
        "(speech: CTC fine-tuning on --labelled-minutes of transcripts, CER and WER)",
    )
    p.add_argument(
        "--finetune-fractions",
        help="label fractions for finetune, supervised and lora, e.g. 0.01,0.1,1 (default 1)",
    )
    p.add_argument("--finetune-epochs", type=int, help="epochs of each trained protocol (10)")
    p.add_argument(
        "--finetune-max-steps",
        type=int,
        help="step cap of each trained protocol, the schedule fitted to it (a budget that "
        "gives the same number on a loaded machine, unlike --finetune-max-time)",
    )
    p.add_argument("--lora-rank", type=int, help="LoRA rank r; 8 works, 4-16 are usual")
    p.add_argument("--lora-alpha", type=float, help="LoRA scale alpha (update × alpha/r); 2 × rank")
    p.add_argument(
        "--merge-lora",
        action="store_true",
        help="also write the encoder with the LoRA adapter merged in (RUN/lora/merged/)",
    )
    p.add_argument("--fewshot-episodes", type=int, help="few-shot episodes per setting (600)")
    p.add_argument(
        "--labelled-minutes",
        type=float,
        dest="ctc_minutes",
        help="minutes of transcribed audio the ctc protocol fine-tunes on (10)",
    )
    p.add_argument(
        "--ctc-data", help="transcribed recordings for the ctc protocol, e.g. asterisk:en"
    )
    p.add_argument("--out", help="where eval.json and report.html go (default: the run folder)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "compare",
        help="the evaluations of several runs side by side: one table, one plot",
        description="One line per run (method, encoder, steps, precision, then every "
        "protocol's accuracy by label fraction, few-shot, the mean corruption accuracy) and the "
        "baselines once per data set; label-efficiency, few-shot and severity curves in one "
        "figure. Evaluate each run first with `selfsup evaluate RUN` (add --protocol fewshot, "
        "robustness, supervised... to compare those too).",
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="evaluated run folders")
    p.add_argument(
        "--out",
        default="compare",
        help="folder for compare.md, compare.png and compare.html (default ./compare)",
    )
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser(
        "generate",
        help="sample text from a causal language model (clm run), with temperature and top-k",
    )
    p.add_argument("run", help="a clm run folder (or its export folder with tokenizer.json)")
    p.add_argument("--prompt", default="", help="text to continue; empty = from the start")
    p.add_argument("--max-new-tokens", type=int, default=60)
    p.add_argument(
        "--temperature",
        type=float,
        default=0.8,
        help="0 = greedy; 0.7-1 reads naturally; higher is more surprising",
    )
    p.add_argument(
        "--top-k", type=int, default=40, help="sample among the k likeliest tokens (0 = all)"
    )
    p.add_argument("--num", type=int, default=3, help="how many samples")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser(
        "zero-shot",
        help="classify images by class-name prompts with an image–text run (clip, siglip, align)",
    )
    p.add_argument("run", help="a clip, siglip or align run or export folder")
    p.add_argument(
        "--data",
        required=True,
        help="images: folder:PATH (subfolders = classes), fashion-mnist, ...",
    )
    p.add_argument(
        "--classes", help="comma-separated class names; default: the data's own (its subfolders)"
    )
    p.add_argument("--split", choices=["train", "test", "all"], default="all")
    p.add_argument("--out", help="CSV of each image's predicted class and score")
    p.set_defaults(func=cmd_zero_shot)

    p = sub.add_parser(
        "word-vectors",
        help="write a word2vec run's vectors in the word2vec text format and score them on "
        "WordSim-353, SimLex-999 and the Google analogies (files from the gensim wheel)",
    )
    p.add_argument("run", help="a word2vec run folder (or its export folder with tokenizer.json)")
    p.add_argument("--out", help="the vectors file (default RUN/vectors.txt; words.json beside it)")
    p.add_argument(
        "--no-eval", action="store_true", help="only write the vectors (no gensim needed)"
    )
    p.set_defaults(func=cmd_word_vectors)

    p = sub.add_parser(
        "show-masking",
        help="draw original / masked / reconstruction of a few images for an MAE, SimMIM, "
        "BEiT or autoencoder run as a PNG",
    )
    p.add_argument(
        "run", help="an mae, simmim, beit or autoencoder run folder (its latest checkpoint)"
    )
    p.add_argument("--images", type=int, default=6, help="how many images (rows)")
    p.add_argument("--data", help="images to show; default: the run's own data set")
    p.add_argument("--split", choices=["train", "test"], default="test")
    p.add_argument("--seed", type=int, default=0, help="seed of the masks drawn")
    p.add_argument("--out", default="masking.png", help="output PNG (default masking.png)")
    p.set_defaults(func=cmd_show_masking)

    p = sub.add_parser("embed", help="write frozen features of a data set to .npy")
    p.add_argument("run")
    p.add_argument("--data", required=True)
    p.add_argument("--split", choices=["train", "test"], default="test")
    p.add_argument(
        "--out", required=True, help="output .npy (labels, if any, go to OUT.labels.npy)"
    )
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser(
        "export", help="write encoder.safetensors + encoder.yaml from a run's checkpoint"
    )
    p.add_argument("run")
    p.add_argument("--checkpoint", help="a step-*.ckpt file; default: the run's latest")
    p.add_argument("--out", help="output folder (default: the run folder)")
    p.add_argument(
        "--format",
        choices=["safetensors", "onnx"],
        default="safetensors",
        help="onnx also writes encoder.onnx (dynamic batch axis), run by onnxruntime and "
        "checked against PyTorch; needs pip install 'selfsup[onnx]'",
    )
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "attention",
        help="draw a ViT's [CLS] attention maps per head (DINO's figure) for a few images as a PNG",
        description="Where the [CLS] token of the last block looks, per head: after DINO "
        "pretraining the heads pick out the object, a quick check that a ViT learned "
        "something. Needs a ViT encoder (e.g. --config fashion-mnist-dino-vit).",
    )
    p.add_argument("run", help="a run folder: its export, else its latest checkpoint")
    p.add_argument(
        "--images", type=int, default=4, help="how many images (rows); 4-8 fit on a screen"
    )
    p.add_argument("--data", help="images to look at; default: the run's own data set")
    p.add_argument("--split", choices=["train", "test"], default="test")
    p.add_argument("--out", default="attention.png", help="output PNG (default attention.png)")
    p.set_defaults(func=cmd_attention)

    p = sub.add_parser(
        "pack",
        help="write a data set as WebDataset shards on disk for data larger than memory "
        "(--data wds:OUT)",
    )
    p.add_argument(
        "source", help="any --data spec: folder:PATH, npz:PATH, fashion-mnist, text:PATH, ..."
    )
    p.add_argument("out_dir", help="folder for the shards and index.json (new, or a failed pack's)")
    p.add_argument(
        "--format",
        choices=["wds", "npy"],
        default="wds",
        help="wds (default): WebDataset tar shards of PNG images or text, which other tools "
        "read too, --data wds:OUT; npy: raw uint8 image shards, --data shards:OUT, ~12x "
        "cheaper to read for small images (28 px): use it when loader CPU is short",
    )
    p.add_argument(
        "--image-size",
        type=int,
        help="resize to this square size while packing (a folder of mixed sizes needs it); "
        "packing at the training size makes every read small",
    )
    p.add_argument(
        "--shard-size",
        type=int,
        help="samples per shard; default: 64 MiB each, which suits most sets. Training "
        "shuffles samples among 8 shards at a time, so larger shards mix more widely",
    )
    p.add_argument(
        "--num-workers",
        type=int,
        default=0,
        help="processes decoding a folder's files while packing; 2-8 for large folders",
    )
    p.add_argument(
        "--skip-bad", action="store_true", help="skip unreadable image files instead of stopping"
    )
    p.set_defaults(func=cmd_pack)

    p = sub.add_parser(
        "demo",
        help="SimCLR on the embedded digits, then the evaluation table (under 3 minutes on 2 cores)",
    )
    p.add_argument("--out", help="run folder (default runs/simclr-digits-<time>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        logging.basicConfig(
            level=logging.INFO if args.verbose else logging.WARNING,
            format="%(levelname)s %(message)s",
        )
        args.func(args)
    except SelfsupError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "interrupted: continue with `selfsup pretrain --resume RUN` from the last checkpoint",
            file=sys.stderr,
        )
        return 130
    finally:
        _leave_process_group()
    return 0


def _leave_process_group() -> None:
    """Destroy the torch.distributed group before the interpreter exits: a gloo group still
    alive at exit can abort a finished run ("terminate called without an active exception")."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
