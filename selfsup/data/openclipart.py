"""openclipart: ~7,500 colour clip-art drawings in 22 categories, rasterised once from SVG.

Debian's ``openclipart-svg`` installs the SVGs under ``/usr/share/openclipart/svg/<category>/``
(``sudo apt-get install openclipart-svg librsvg2-bin``, 25 MB download). The first use renders
every SVG with ``rsvg-convert`` (from librsvg2-bin) onto white, fitted into a square and
centred, as PNGs in the cache folder (``selfsup.cache``; 40-100 ms per drawing per core,
a few minutes in all); afterwards the PNGs are read as a ``folder:`` source: the top-level category is the
label and ~20% of the files go to test by a hash of the path.

Some drawings sit in several folders: each distinct file (by content) is kept once, in the
first folder in sorted order. SVGs that rsvg-convert cannot render are skipped and counted.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from PIL import Image

from selfsup.cache import cache_dir
from selfsup.errors import SelfsupError

DEFAULT_FOLDER = Path("/usr/share/openclipart/svg")
RASTER_SIZE = 64
"""Side of the rendered PNGs when no image size is asked for."""
RENDER_TIMEOUT_S = 60
"""A drawing that takes longer to render than this is skipped as broken."""
INSTALL_HINT = "sudo apt-get install openclipart-svg librsvg2-bin"
MANIFEST = "complete.json"


def list_svgs(root: Path) -> list[str]:
    """Relative POSIX paths of the distinct SVG files under ``root`` (by content; the first
    in sorted order wins), sorted; hidden entries skipped, symlinks followed."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = Path(dirpath).relative_to(root)
        found += [(rel / f).as_posix() for f in filenames if f.lower().endswith(".svg")]
    distinct: list[str] = []
    seen: set[bytes] = set()
    for rel in sorted(found):
        try:
            digest = hashlib.blake2b((root / rel).read_bytes(), digest_size=16).digest()
        except OSError:
            continue  # a dangling link
        if digest not in seen:
            seen.add(digest)
            distinct.append(rel)
    return distinct


def render_svg(svg: Path, png: Path, size: int, converter: str = "rsvg-convert") -> bool:
    """Render ``svg`` onto white, fitted into and centred in a ``size``² RGB PNG; False if it
    cannot be rendered. The PNG appears atomically (never half-written)."""
    png.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=png.parent, suffix=".png.tmp")
    os.close(fd)
    try:
        command = [converter, "-w", str(size), "-h", str(size), "--keep-aspect-ratio"]
        command += ["-b", "white", "-f", "png", "-o", tmp, str(svg)]
        done = subprocess.run(command, capture_output=True, timeout=RENDER_TIMEOUT_S)
        if done.returncode != 0:
            return False
        with Image.open(tmp) as im:
            im = im.convert("RGB")
            canvas = Image.new("RGB", (size, size), "white")
            canvas.paste(im, ((size - im.width) // 2, (size - im.height) // 2))
        canvas.save(tmp, format="PNG")
        os.replace(tmp, png)
        return True
    except (subprocess.TimeoutExpired, OSError, ValueError):
        return False
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def rasterize(root: Path, out: Path, size: int, *, progress: bool = True) -> dict[str, int]:
    """Render every distinct SVG under ``root`` into ``out`` (same relative paths, .png), once:
    a finished folder holds a manifest and is reused; an interrupted one is resumed."""
    manifest = out / MANIFEST
    if manifest.is_file():
        return json.loads(manifest.read_text())
    converter = shutil.which("rsvg-convert")
    if converter is None:
        raise SelfsupError(
            "rendering openclipart's SVGs needs rsvg-convert: sudo apt-get install librsvg2-bin"
        )
    svgs = list_svgs(root)
    if not svgs:
        raise SelfsupError(f"no .svg files under {root}; point openclipart:FOLDER at SVG files")
    todo = [s for s in svgs if not (out / s).with_suffix(".png").is_file()]

    def job(rel: str) -> bool:
        return render_svg(root / rel, (out / rel).with_suffix(".png"), size, converter)

    from rich.progress import Progress

    from selfsup.engine.progress import console

    failed = 0
    with (
        Progress(console=console, disable=not progress, transient=True) as bar,
        ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool,
    ):
        task = bar.add_task(f"rendering {len(todo)} SVGs at {size} px", total=len(todo))
        for ok in pool.map(job, todo):
            failed += not ok
            bar.advance(task)
    counts = {"svgs": len(svgs), "rendered": len(svgs) - failed, "skipped": failed}
    if counts["rendered"] == 0:
        raise SelfsupError(f"rsvg-convert could not render any of the {len(svgs)} SVGs in {root}")
    manifest.write_text(json.dumps(counts))
    if failed:
        console.print(
            f"[yellow]openclipart: skipped {failed} SVGs that rsvg-convert cannot render[/]"
        )
    return counts


def openclipart_folder(argument: str, image_size: int | None) -> Path:
    """The folder of rendered PNGs for ``openclipart[:FOLDER]`` (rendering it on first use)."""
    root = Path(argument).expanduser() if argument else DEFAULT_FOLDER
    if not root.is_dir():
        if argument:
            raise SelfsupError(f"openclipart folder {root} does not exist; check the path")
        raise SelfsupError(f"openclipart is not installed ({root} is missing): {INSTALL_HINT}")
    size = image_size or RASTER_SIZE
    key = hashlib.blake2b(str(root.resolve()).encode(), digest_size=6).hexdigest()
    out = cache_dir("openclipart", f"{root.name}-{key}-{size}px")
    rasterize(root, out, size)
    return out


# --- captions from the SVG metadata (the openclipart-pairs source) -----------------------

_AGENT = re.compile(r"<cc:Agent\b.*?</cc:Agent>", re.S)
_TAG = re.compile(r"<[^>]+>")


def _first(tag: str, text: str) -> str:
    found = re.search(rf"<{tag}>(.*?)</{tag}>", text, re.S)
    return " ".join(html.unescape(_TAG.sub(" ", found.group(1))).split()) if found else ""


def svg_metadata(svg: Path) -> dict[str, Any]:
    """The drawing's own ``dc:title``, ``dc:description`` and keywords (``dc:subject``'s
    ``rdf:li`` items), read from its RDF metadata; empty where it has none. The titles of
    the publisher, creator and rights holder (``cc:Agent``) are not the drawing's and are left
    out."""
    text = svg.read_text(encoding="utf-8", errors="replace")
    start, stop = text.find("<metadata"), text.find("</metadata>")
    meta = _AGENT.sub(" ", text[start:stop]) if 0 <= start < stop else ""
    subject = re.search(r"<dc:subject>(.*?)</dc:subject>", meta, re.S)
    keywords = re.findall(r"<rdf:li>(.*?)</rdf:li>", subject.group(1), re.S) if subject else []
    return {
        "title": _first("dc:title", meta),
        "description": _first("dc:description", meta),
        "keywords": [k for k in (" ".join(html.unescape(w).split()) for w in keywords) if k],
    }


def category_pattern(categories: list[str]) -> re.Pattern[str]:
    """Whole words naming any of the ``categories`` (folder names such as
    ``signs_and_symbols``), singular or plural, in any case: ``animals`` matches 'Animal' and
    'animals'; 'and' is not a category word."""
    words = {w for c in categories for w in c.lower().split("_") if w != "and"}
    stems = sorted({w[:-1] if len(w) > 3 and w.endswith("s") else w for w in words} | {"person"})
    return re.compile(r"\b(?:" + "|".join(map(re.escape, stems)) + r")s?\b", re.I)


def make_caption(meta: dict[str, Any], remove: re.Pattern[str] | None = None) -> str:
    """The caption "title. description. keyword, keyword, ..." (keywords equal to the title dropped),
    with the words ``remove`` matches cut out; "" when nothing is left."""
    title = meta["title"]
    keywords = [k for k in meta["keywords"] if k.lower() != title.lower()]
    parts = [title, meta["description"], ", ".join(keywords)]
    if remove is not None:
        parts = [remove.sub(" ", p) for p in parts]
    parts = [re.sub(r"\s*,(\s*,)+", ",", " ".join(p.split())).strip(" ,.;:-") for p in parts]
    return ". ".join(p for p in parts if p)


def openclipart_metadata(root: Path, svgs: list[str], out: Path) -> dict[str, dict[str, Any]]:
    """``svg_metadata`` of every drawing, by relative SVG path; read once and kept as
    ``metadata.json`` beside the rendered PNGs."""
    cached = out / "metadata.json"
    if cached.is_file():
        return json.loads(cached.read_text())  # type: ignore[no-any-return]
    metadata = {rel: svg_metadata(root / rel) for rel in svgs}
    partial = out / f".metadata.json.{os.getpid()}"
    partial.write_text(json.dumps(metadata))
    os.replace(partial, cached)
    return metadata
