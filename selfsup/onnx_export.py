"""ONNX export with a parity check: ``encoder.onnx`` beside ``encoder.safetensors``.

The graph takes what the encoder's ``forward`` takes (normalised float images, token ids: the
modality's ``example_input`` says which; encoder.yaml's ``input`` section says how to make it
from raw data) with a dynamic batch axis, and returns the pooled (B, D) features. Right after
writing it, ``onnxruntime`` runs it on a batch of another size and the features are compared
with PyTorch's: an export whose features differ by more than ``tolerance`` is an error, not a
warning, and the file is removed.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from selfsup.errors import SelfsupError

ONNX_FILE = "encoder.onnx"
OPSET = 17
"""ONNX opset: 17 has LayerNormalization as one op and runs on every onnxruntime since 1.13."""


def _onnxruntime():  # type: ignore[no-untyped-def]
    try:
        import onnx  # noqa: F401  (torch's exporter needs it)
        import onnxruntime
    except ImportError:
        raise SelfsupError(
            "ONNX export needs onnx and onnxruntime: pip install 'selfsup[onnx]'"
        ) from None
    return onnxruntime


def export_onnx(
    encoder: nn.Module, path: str | Path, *, tolerance: float = 1e-4, seed: int = 0
) -> dict[str, float | str]:
    """Write ``encoder`` as an ONNX graph at ``path`` and check it against PyTorch.

    The graph is traced on a batch of 2 from the encoder's modality (``example_input``); the
    check runs onnxruntime (CPU) on a batch of 3, so the dynamic batch axis is exercised too.

    Args:
        encoder: a registered encoder (its modality makes the inputs), in any mode; it is
            exported in eval mode on the CPU.
        tolerance: the largest allowed |onnx - torch| over every feature, relative to the
            largest |torch| feature (1e-4 holds in float32 for every registered encoder).

    Returns:
        {"path": str, "max_abs_diff": float, "max_abs_feature": float}.
    """
    from selfsup.modalities import modality_of_encoder

    ort = _onnxruntime()
    modality = modality_of_encoder(encoder)
    encoder = encoder.cpu().eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    trace_input = modality.example_input(encoder, 2, seed=seed)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        try:
            torch.onnx.export(
                encoder,
                (trace_input,),
                str(path),
                dynamo=False,
                input_names=["input"],
                output_names=["features"],
                dynamic_axes={"input": {0: "batch"}, "features": {0: "batch"}},
                opset_version=OPSET,
            )
        except Exception as error:  # the exporter raises many kinds for unsupported ops
            path.unlink(missing_ok=True)
            raise SelfsupError(
                f"{type(encoder).__name__} cannot be exported to ONNX: "
                f"{str(error).splitlines()[0][:200]}"
            ) from None
    check = modality.example_input(encoder, 3, seed=seed + 1)
    with torch.no_grad():
        expected = encoder(check).float().numpy()  # (3, D)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(["features"], {"input": check.numpy()})  # (3, D)
    scale = float(np.abs(expected).max())
    diff = float(np.abs(got - expected).max()) if got.shape == expected.shape else float("inf")
    if not diff <= tolerance * max(scale, 1.0):
        path.unlink(missing_ok=True)
        raise SelfsupError(
            f"the ONNX export of {type(encoder).__name__} gives features {diff:.2e} away from "
            f"PyTorch's (shape {got.shape} vs {expected.shape}); nothing was written"
        )
    return {"path": str(path), "max_abs_diff": diff, "max_abs_feature": scale}
