"""Export: ``encoder.safetensors`` (weights) + ``encoder.yaml`` (how to rebuild and feed it).

``load_encoder`` needs those two files and nothing else: no pickle, no training code, no
checkpoint. The YAML says which registered encoder to build with which arguments and
how its inputs were normalised.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file, save_file
from torch import nn

from selfsup.errors import SelfsupError

WEIGHTS = "encoder.safetensors"
SPEC = "encoder.yaml"


def export_encoder(encoder: nn.Module, folder: str | Path, **info: Any) -> Path:
    """Write the encoder's weights and rebuild spec into ``folder``; ``info`` adds what feeding
    it takes (the modality's ``input`` description, image size, text length) and context
    (method, data, step) to the YAML. Files the modality exports beside it (a tokenizer) are
    written by the modality (``Modality.export``)."""
    build_args = getattr(encoder, "build_args", None)
    if build_args is None:
        raise SelfsupError(
            "this encoder was not built by selfsup.encoders.build_encoder, so it cannot be rebuilt from a file; "
            "save its state_dict yourself (safetensors.torch.save_file) or register it in selfsup.encoders"
        )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # a contiguous copy each: safetensors refuses tensors that share memory, such as the one
    # PReLU that PyG's GIN passes to every layer (each name then loads the same value back),
    # and channels-last ones
    state = {
        k: v.detach().cpu().clone(memory_format=torch.contiguous_format)
        for k, v in encoder.state_dict().items()
    }
    save_file(state, str(folder / WEIGHTS))
    spec = {"encoder": dict(build_args), "embed_dim": int(encoder.embed_dim), **info}
    (folder / SPEC).write_text(yaml.safe_dump(spec, sort_keys=False))
    return folder / WEIGHTS


def _spec_folder(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        return path
    if path.name in (WEIGHTS, SPEC):
        return path.parent
    raise SelfsupError(f"{str(path)!r} is neither a run folder nor an {WEIGHTS}/{SPEC} file")


def read_spec(path: str | Path) -> dict[str, Any]:
    folder = _spec_folder(path)
    spec_file = folder / SPEC
    if not spec_file.is_file():
        raise SelfsupError(
            f"no {SPEC} in {str(folder)!r}: export the run first with `selfsup export RUN`"
        )
    spec = yaml.safe_load(spec_file.read_text())
    if not isinstance(spec, dict) or "encoder" not in spec:
        raise SelfsupError(f"{spec_file} is not a selfsup encoder spec (no 'encoder' section)")
    return spec


def load_encoder(path: str | Path) -> nn.Module:
    """Rebuild an exported encoder in eval mode from a run folder or its exported files."""
    from selfsup.encoders import build_encoder

    folder = _spec_folder(path)
    spec = read_spec(folder)
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise SelfsupError(
            f"no {WEIGHTS} in {str(folder)!r}: export the run first with `selfsup export RUN`"
        )
    encoder = build_encoder(**spec["encoder"])
    try:
        state = load_file(str(weights))
    except Exception as error:
        raise SelfsupError(
            f"{weights} is unreadable ({error}); re-export it with `selfsup export RUN`"
        ) from None
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise SelfsupError(
            f"{weights} does not match the encoder described in {folder / SPEC}: "
            f"missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]}"
        )
    return encoder.eval()
