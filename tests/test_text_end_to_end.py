"""Text through the whole pipeline: a labelled JSONL corpus, a tokenizer trained with the run,
MLM and CLM pretraining, evaluation (probes, TF-IDF baseline, fine-tuning, perplexity),
export, embed and generate; and the modality checks that keep images and text apart."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from selfsup import pretrain
from selfsup.api import embed, generate_text
from selfsup.cli import main
from selfsup.data.tokenizer import TOKENIZER_FILE, encode_batch, find_tokenizer
from selfsup.export import load_encoder

TOPICS = {
    "food": "bread soup cheese apple dinner cook kitchen taste sweet salt",
    "space": "star planet orbit rocket moon comet galaxy launch sky light",
    "sea": "wave ship harbour sail fish tide shore storm anchor deep",
}
TINY = {"depth": 1, "embed_dim": 32, "num_heads": 2, "dropout": 0.0}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A JSONL file of 240 short labelled texts, three topics with a shared filler vocabulary."""
    rng = random.Random(0)
    filler = "the a of and to in is it that on".split()
    path = tmp_path_factory.mktemp("text") / "notes.jsonl"
    with path.open("w") as f:
        for i in range(240):
            label = list(TOPICS)[i % 3]
            words = rng.choices(TOPICS[label].split(), k=4) + rng.choices(filler, k=4)
            rng.shuffle(words)
            f.write(json.dumps({"text": " ".join(words), "label": label}) + "\n")
    return path


def _run(method, encoder, corpus, out, **eval_options):
    return pretrain(
        method=method,
        encoder=encoder,
        data={"name": f"text:{corpus}", "max_length": 16, "vocab_size": 64},
        encoder_args=TINY,
        out=str(out),
        train={"max_steps": 6, "batch_size": 16, "progress": False, "lr": 3e-3},
        eval={"label_fractions": [1.0], "seeds": [0], "report": False, **eval_options},
    )


def test_mlm_run_evaluates_against_tfidf_and_random_init_and_exports(corpus, tmp_path):
    run = _run(
        "mlm",
        "transformer-tiny",
        corpus,
        tmp_path / "mlm",
        protocols=["linear", "knn", "finetune"],
        finetune_epochs=2,
    )
    assert (run.run_dir / TOKENIZER_FILE).is_file()
    rows = json.loads((run.run_dir / "eval.json").read_text())
    got = {(r["encoder"], r["protocol"]) for r in rows}
    for encoder in ("mlm", "random-init", "raw"):
        assert (encoder, "linear") in got and (encoder, "knn") in got
    assert ("mlm", "finetune") in got and ("random-init", "finetune") in got
    raw = [r for r in rows if r["encoder"] == "raw"]
    assert all(r["features"] == "tf-idf" for r in raw)
    # the topic words make the task easy for TF-IDF: the baseline is real, not a stub
    assert next(r for r in raw if r["protocol"] == "linear")["accuracy"] > 0.9

    # export: the encoder and its tokenizer alone reproduce the features
    encoder = load_encoder(run.run_dir)
    tokens = encode_batch(find_tokenizer(run.run_dir), ["the star and the moon"], 16)
    again = load_encoder(run.run_dir)
    assert torch.equal(encoder(tokens), again(tokens))
    features = embed(run.run_dir, f"text:{corpus}", "test", out=tmp_path / "f.npy")
    assert features.shape[1] == 32 and np.isfinite(features).all()
    assert np.load(tmp_path / "f.labels.npy").shape == (features.shape[0],)


def test_clm_run_reports_perplexity_and_generates(corpus, tmp_path):
    run = _run("clm", "gpt-tiny", corpus, tmp_path / "clm", protocols=["linear"])
    lm = json.loads((run.run_dir / "perplexity.json").read_text())
    assert {r["encoder"] for r in lm} == {"clm", "random-init"}
    assert all(r["perplexity"] > 1 and r["tokens"] > 0 for r in lm)
    texts = generate_text(run.run_dir, "the star", num=2, max_new_tokens=5, seed=1)
    assert len(texts) == 2 and all(t.startswith("the star") for t in texts)
    assert generate_text(run.run_dir, "the", temperature=0, num=2, max_new_tokens=4) == (
        generate_text(run.run_dir, "the", temperature=0, num=2, max_new_tokens=4, seed=7)
    )


def test_evaluate_command_reads_the_runs_tokenizer(corpus, tmp_path, capsys):
    run = _run("data2vec", "transformer-tiny", corpus, tmp_path / "d2v", baselines=False)
    assert main(["evaluate", str(run.run_dir), "--no-baselines", "--no-report"]) == 0
    captured = capsys.readouterr()
    assert "data2vec" in captured.out + captured.err


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["pretrain", "--method", "mlm", "--data", "digits"], "learns from text"),
        (["pretrain", "--method", "simclr", "--data", "fortunes"], "learns from image"),
        (["pretrain", "--method", "mae", "--data", "text:x.txt"], "learns from image"),
        (
            ["pretrain", "--method", "data2vec", "--encoder", "convnet", "--data", "TEXT"],
            "--encoder transformer-tiny",
        ),
        (["pretrain", "--method", "mlm", "--data", "TEXT", "--max-length", "2"], "max_length"),
        (["pretrain", "--method", "mlm", "--data", "TEXT", "--tokenizer", "nope"], "tokenizer"),
        (["generate", "MLMRUN"], "not a language model"),
    ],
)
def test_modality_mistakes_are_one_clear_line(argv, expected, corpus, tmp_path, capsys):
    if "MLMRUN" in argv:
        run = _run("mlm", "transformer-tiny", corpus, tmp_path / "m", baselines=False)
        argv = [str(run.run_dir) if a == "MLMRUN" else a for a in argv]
        capsys.readouterr()  # the run's own table
    argv = [f"text:{corpus}" if a == "TEXT" else a for a in argv]
    argv += ["--out", str(tmp_path / "bad")] if argv[0] == "pretrain" else []
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and "\n" not in err and "Traceback" not in err
