"""Image–text pairs: the sources (folder, CSV/JSONL manifests, WebDataset shards,
openclipart's SVG metadata), bad pairs, zero-shot and retrieval scoring, the gradient cache,
and a tiny CLIP run end to end whose zero-shot accuracy and retrieval must beat random init."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning_fabric import Fabric
from PIL import Image
from torch import nn

from selfsup.cli import main
from selfsup.data.pairs import PairDataset, load_pairs
from selfsup.data.tokenizer import train_tokenizer
from selfsup.encoders.dual import DualEncoder
from selfsup.engine.accumulate import cached_step, supports_gradient_cache
from selfsup.errors import SelfsupError
from selfsup.evaluate.retrieval import (
    ensemble_classifier,
    prompts_for,
    recall_at_k,
    tfidf_zero_shot,
)
from selfsup.methods import DataInfo, build_method

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 200, 30),
    "blue": (30, 30, 220),
    "yellow": (230, 220, 20),
}


def _drawing(colour: str, shape: str, side: int = 12) -> Image.Image:
    a = np.full((side, side, 3), 255, np.uint8)
    if shape == "square":
        a[3:9, 3:9] = COLOURS[colour]
    else:
        a[:, 5:7] = COLOURS[colour]
    return Image.fromarray(a)


def write_folder(root: Path, n: int = 80) -> Path:
    """Drawings of a coloured square or stripe (the label: the subfolder) captioned with
    their colour and shape."""
    for i in range(n):
        colour, shape = list(COLOURS)[i % 4], ("square", "stripe")[(i // 4) % 2]
        (root / shape).mkdir(parents=True, exist_ok=True)
        _drawing(colour, shape).save(root / shape / f"{i:03d}.png")
        (root / shape / f"{i:03d}.txt").write_text(f"a {colour} {shape}, drawing {i}\n")
    return root


def test_a_folder_of_captioned_images(tmp_path):
    root = write_folder(tmp_path / "pairs")
    train, test = (load_pairs(f"pairs:{root}", s) for s in ("train", "test"))
    assert len(train.captions) + len(test.captions) == 80 and len(test.captions) > 5
    assert not set(train.keys) & set(test.keys)
    assert train.class_names == ["square", "stripe"]
    i = train.keys.index(train.keys[0])
    assert train.captions[i].split(",")[0].endswith(train.keys[0].split("/")[0])
    data = PairDataset(test, _tokenizer(train.captions), max_length=12)
    sample = data[0]
    assert sample["image"].shape == (3, 12, 12) and sample["image"].dtype == torch.uint8
    assert sample["tokens"].shape == (12,) and int(sample["label"]) in (0, 1)


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_a_manifest(tmp_path, kind):
    root = write_folder(tmp_path / "images", 40)
    rows = [
        {
            "image": p.relative_to(tmp_path).as_posix(),
            "caption": p.with_suffix(".txt").read_text(),
            "label": p.parent.name,
        }
        for p in sorted(root.rglob("*.png"))
    ]
    manifest = tmp_path / f"pairs.{kind}"
    if kind == "csv":
        lines = ["image,caption,label"] + [
            f'{r["image"]},"{r["caption"].strip()}",{r["label"]}' for r in rows
        ]
        manifest.write_text("\n".join(lines) + "\n")
    else:
        manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    both = [load_pairs(f"pairs:{manifest}", s) for s in ("train", "test")]
    assert sum(len(c.captions) for c in both) == 40
    assert both[0].class_names == ["square", "stripe"] and both[0].labels is not None


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_shard(path: Path, n: int = 30, drop_caption: int | None = None) -> Path:
    """A WebDataset tar as img2dataset writes it: KEY.png + KEY.txt per sample."""
    with tarfile.open(path, "w") as tar:
        for i in range(n):
            colour = list(COLOURS)[i % 4]
            members = {
                "png": _png_bytes(_drawing(colour, "square")),
                "txt": f"a {colour} square".encode(),
            }
            if i == drop_caption:
                del members["txt"]
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{i:06d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def test_webdataset_shards(tmp_path):
    shard = write_shard(tmp_path / "shard-000.tar")
    train, test = (load_pairs(f"pairs:{shard}", s) for s in ("train", "test"))
    assert len(train.captions) + len(test.captions) == 30 and train.labels is None
    data = PairDataset(train, _tokenizer(train.captions + test.captions), max_length=8)
    assert data.images.shape[1:] == (3, 12, 12) and not data.has_labels
    with pytest.raises(SelfsupError, match="lacks a txt caption"):
        load_pairs(f"pairs:{write_shard(tmp_path / 'bad.tar', drop_caption=3)}", "train")


def test_bad_pairs_are_one_line_errors_or_skipped_and_counted(tmp_path):
    root = write_folder(tmp_path / "pairs", 40)
    (root / "square" / "000.txt").unlink()  # an image without a caption
    (root / "square" / "001.txt").write_text("   \n")  # an empty caption
    for split in ("train", "test"):
        with pytest.raises(SelfsupError, match="has no caption file|has an empty caption"):
            load_pairs(f"pairs:{root}", split)
    kept = [load_pairs(f"pairs:{root}", s, skip_bad=True) for s in ("train", "test")]
    assert sum(len(c.captions) for c in kept) == 38
    assert len(kept[0].skipped) == 2  # counted over the whole source, in every split

    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"image": "nowhere.png", "caption": "a cat"}) + "\n")
    with pytest.raises(SelfsupError, match="names a missing image file 'nowhere.png'"):
        load_pairs(f"pairs:{manifest}", "train")
    (tmp_path / "m.csv").write_text("path,text\nx.png,a cat\n")
    with pytest.raises(SelfsupError, match="no 'image' column"):
        load_pairs(f"pairs:{tmp_path / 'm.csv'}", "train")

    corrupt = write_folder(tmp_path / "corrupt", 40)
    for p in corrupt.rglob("*.png"):
        p.write_bytes(b"not a png")
        break
    corpus = (
        load_pairs(f"pairs:{corrupt}", "train")
        if _has_bad(corrupt, "train")
        else load_pairs(f"pairs:{corrupt}", "test")
    )
    tok = _tokenizer(corpus.captions)
    with pytest.raises(SelfsupError, match="cannot be decoded"):
        PairDataset(corpus, tok)
    assert len(PairDataset(corpus, tok, skip_bad=True).skipped) == 1


def _has_bad(root: Path, split: str) -> bool:
    return any(
        k.endswith(".png") and (root / k).read_bytes() == b"not a png"
        for k in load_pairs(f"pairs:{root}", split).keys
    )


def test_the_command_line_says_one_line_and_exits_2(tmp_path, capsys):
    root = write_folder(tmp_path / "pairs", 20)
    (root / "stripe" / "004.txt").unlink()
    argv = ["pretrain", "--method", "clip", "--data", f"pairs:{root}", "--out", str(tmp_path / "r")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no caption file 004.txt" in err[0] and "--skip-bad" in err[0]


# ------------------------------------------------------------------ openclipart captions

SVG_WITH_METADATA = """<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"
 xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns:cc="http://web.resource.org/cc/"
 xmlns:dc="http://purl.org/dc/elements/1.1/"><metadata>
<rdf:RDF><cc:Work rdf:about=""><dc:title>Red Cat &amp; dog</dc:title>
<dc:description>A cat sitting, drawn for the animals set</dc:description>
<dc:subject><rdf:Bag><rdf:li>cat</rdf:li><rdf:li>Animal</rdf:li><rdf:li>pets</rdf:li>
<rdf:li>signs</rdf:li></rdf:Bag></dc:subject>
<dc:publisher><cc:Agent rdf:about="x"><dc:title>Someone Else</dc:title></cc:Agent></dc:publisher>
</cc:Work></rdf:RDF></metadata><rect width="10" height="10" fill="#f00"/></svg>"""


def test_openclipart_captions_come_from_the_metadata_with_category_words_cut(tmp_path):
    from selfsup.data.openclipart import category_pattern, make_caption, svg_metadata

    svg = tmp_path / "cat.svg"
    svg.write_text(SVG_WITH_METADATA)
    meta = svg_metadata(svg)
    assert meta == {
        "title": "Red Cat & dog",
        "description": "A cat sitting, drawn for the animals set",
        "keywords": ["cat", "Animal", "pets", "signs"],
    }
    assert (
        make_caption(meta)
        == "Red Cat & dog. A cat sitting, drawn for the animals set. cat, Animal, pets, signs"
    )
    cut = make_caption(meta, category_pattern(["animals", "signs_and_symbols"]))
    assert cut == "Red Cat & dog. A cat sitting, drawn for the set. cat, pets"


needs_openclipart = pytest.mark.skipif(
    not Path("/usr/share/openclipart/svg").is_dir() or shutil.which("rsvg-convert") is None,
    reason="openclipart-svg / librsvg2-bin not installed",
)


@needs_openclipart
def test_openclipart_pairs_from_svgs(tmp_path, monkeypatch):
    """The built-in source on a few SVGs: captions from metadata, categories as labels."""
    monkeypatch.setenv("SELFSUP_CACHE", str(tmp_path / "cache"))
    for category in ("animals", "food"):
        for i in range(4):
            (tmp_path / "svg" / category).mkdir(parents=True, exist_ok=True)
            text = SVG_WITH_METADATA.replace("Red Cat", f"Red Cat {category} {i}")
            (tmp_path / "svg" / category / f"{i}.svg").write_text(text)
    both = [
        load_pairs(f"openclipart-pairs:{tmp_path / 'svg'}", s, image_size=8)
        for s in ("train", "test")
    ]
    kept = load_pairs(f"openclipart-pairs-kept:{tmp_path / 'svg'}", "train", image_size=8)
    assert sum(len(c.captions) for c in both) == 8 and both[0].class_names == ["animals", "food"]
    assert all("animal" not in c.lower() and "food" not in c.lower() for c in both[0].captions)
    assert any("animal" in c.lower() for c in kept.captions)


# ------------------------------------------------------------------ scoring


def test_recall_at_k_against_counting_by_hand():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    g = torch.tensor([[1.0, 0.1], [1.0, 0.0], [-1.0, 1.0]])
    # query 0's match (item 0) is beaten by item 1; query 1's by items 0 and 2; query 2's
    # by items 0 and 1
    sims = torch.nn.functional.normalize(q, dim=1) @ torch.nn.functional.normalize(g, dim=1).T
    ranks = [(sims[i] > sims[i, i]).sum().item() for i in range(3)]
    assert ranks == [1, 2, 2]
    recall = recall_at_k(q, g, (1, 2, 3))
    assert recall == {1: 0.0, 2: pytest.approx(100 / 3), 3: pytest.approx(100.0)}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_balanced_accuracy_is_the_mean_of_per_class_accuracies(seed):
    from selfsup.evaluate.retrieval import balanced_accuracy

    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 6, (200,), generator=g)
    labels[labels == 4] = 0  # class 4 absent from the labels: it does not count
    predicted = torch.where(
        torch.rand(200, generator=g) < 0.6, labels, torch.randint(0, 6, (200,), generator=g)
    )
    per_class = []
    for c in range(6):
        rows = [i for i in range(200) if labels[i] == c]
        if rows:
            per_class.append(sum(int(predicted[i] == c) for i in rows) / len(rows))
    assert balanced_accuracy(predicted, labels) == pytest.approx(
        100 * sum(per_class) / len(per_class)
    )
    # always the largest class: its share as accuracy, chance over the classes present here
    largest = torch.full_like(labels, int(torch.bincount(labels).argmax()))
    assert balanced_accuracy(largest, labels) == pytest.approx(100 / len(per_class))


def test_the_prompt_ensemble_is_the_mean_of_normalised_prompts():
    assert prompts_for(["signs_and_symbols"], ("a {}.", "{}"))[0] == "a signs and symbols."
    z = torch.tensor([[2.0, 0.0], [0.0, 5.0], [0.0, -1.0], [0.0, -3.0]])  # 2 classes x 2 prompts
    classifier = ensemble_classifier(z, 2)
    torch.testing.assert_close(classifier, torch.tensor([[2**-0.5, 2**-0.5], [0.0, -1.0]]))


def test_tfidf_baseline_reads_class_names_in_captions():
    guessed = tfidf_zero_shot(
        ["a red square", "a blue stripe"], ["one square", "stripe"], ["square", "stripe"]
    )
    assert guessed.tolist() == [0, 1]


# ------------------------------------------------------------------ gradient cache


class _Bag(nn.Module):
    """A text tower without attention: the mean of the non-pad token embeddings."""

    embed_dim = 8

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 8)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        weight = (tokens != 0).unsqueeze(-1).float()
        return (self.embed(tokens) * weight).sum(1) / weight.sum(1).clamp(min=1)


class _Pixels(nn.Module):
    embed_dim = 8

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@pytest.mark.parametrize("name", ["clip", "siglip", "align"])
def test_the_gradient_cache_gives_the_whole_batch_gradients(name):
    """4,096 pairs in micro-batches of 256: the gradients of one step over the whole batch."""
    g = torch.Generator().manual_seed(0)
    batch = {
        "image": torch.randint(0, 256, (4096, 3, 4, 4), generator=g, dtype=torch.uint8),
        "tokens": torch.randint(1, 50, (4096, 6), generator=g),
    }

    def method() -> nn.Module:
        torch.manual_seed(0)
        towers = DualEncoder(_Pixels(), _Bag(), proj_dim=8)
        return build_method(name, {}, towers, DataInfo(3, 4, channels_last=False, modality="pairs"))

    whole = method()
    assert supports_gradient_cache(whole)
    loss = whole.training_step(batch)["loss"]
    loss.backward()
    expected = {n: p.grad.clone() for n, p in whole.named_parameters()}
    cached = method()
    fabric = Fabric(accelerator="cpu", devices=1)
    out = cached_step(fabric, fabric.setup_module(cached), batch, 256)
    assert out["loss"].item() == pytest.approx(loss.item(), rel=1e-5)
    for n, p in cached.named_parameters():
        torch.testing.assert_close(p.grad, expected[n], rtol=1e-4, atol=1e-6, msg=n)


# ------------------------------------------------------------------ end to end


def _tokenizer(captions: list[str]):
    return train_tokenizer(captions, "wordpiece", vocab_size=200, min_frequency=1)


@pytest.mark.slow
def test_clip_learns_zero_shot_and_retrieval_end_to_end(tmp_path, capsys):
    """A tiny CLIP run from the API on captioned drawings: exported towers and tokenizer, and
    zero-shot accuracy and retrieval above the random-init towers."""
    from selfsup.api import pretrain

    root = write_folder(tmp_path / "pairs", 160)
    run = pretrain(
        method="clip",
        data={"name": f"pairs:{root}", "max_length": 12, "vocab_size": 200},
        encoder_args={
            "image_options": {"width": 8},
            "text_options": {"embed_dim": 32, "depth": 1, "num_heads": 2, "dropout": 0.0},
            "proj_dim": 32,
        },
        train={"batch_size": 32, "max_steps": 60, "lr": 3e-3, "progress": False},
        eval={"protocols": ["knn"], "label_fractions": [1.0], "seeds": [0], "report": False},
        out=str(tmp_path / "run"),
    )
    for name in ("encoder.safetensors", "encoder.yaml", "tokenizer.json", "zero_shot.json"):
        assert (run.run_dir / name).is_file(), name
    zero = {r["encoder"]: r for r in json.loads((run.run_dir / "zero_shot.json").read_text())}
    found = {r["encoder"]: r for r in json.loads((run.run_dir / "retrieval.json").read_text())}
    assert zero["clip"]["zero_shot_accuracy"] >= 80 > zero["random-init"]["zero_shot_accuracy"]
    assert zero["clip"]["zero_shot_balanced_accuracy"] >= 80
    assert found["clip"]["image_to_text_r5"] > 2 * found["random-init"]["image_to_text_r5"]
    assert found["clip"]["text_to_image_r5"] > 2 * found["random-init"]["text_to_image_r5"]

    # `selfsup zero-shot` on a folder of images: the subfolders are the classes
    images = tmp_path / "images"
    for path in root.rglob("*.png"):
        (images / path.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, images / path.parent.name / path.name)
    out = tmp_path / "predictions.csv"
    assert main(
        ["zero-shot", str(run.run_dir), "--data", f"folder:{images}", "--out", str(out)]
    ) in (0, None)
    printed = capsys.readouterr().out
    accuracy = float(printed.split("zero-shot accuracy ")[1].split("%")[0])
    assert accuracy >= 80, printed
    assert float(printed.split("mean per class ")[1].split("%")[0]) >= 80, printed
    rows = out.read_text().splitlines()
    assert rows[0] == "image,predicted,score" and len(rows) == 1 + 160
    assert {r.split(",")[1] for r in rows[1:]} <= {"square", "stripe"}
    # classes of the user's choosing on unlabelled images, and the one-line refusals
    flat = tmp_path / "flat"
    flat.mkdir()
    for path in list(images.rglob("*.png"))[:10]:
        shutil.copy(path, flat / f"{path.parent.name}-{path.name}")
    assert main(
        ["zero-shot", str(run.run_dir), "--data", f"folder:{flat}", "--classes", "square,stripe"]
    ) in (0, None)
    assert "10 images over 2 classes" in capsys.readouterr().out
    for argv, message in [
        (["--data", f"folder:{flat}"], "pass at least two with --classes"),
        (
            ["--data", f"folder:{images}", "--split", "all", "--classes", "square"],
            "pass at least two",
        ),
    ]:
        assert main(["zero-shot", str(run.run_dir), *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0]
