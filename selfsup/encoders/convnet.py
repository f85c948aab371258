"""A small plain ConvNet for images of 32 px or less that trains quickly on a CPU."""

from __future__ import annotations

from torch import Tensor, nn

from selfsup.encoders.resnet import NormKind, check_norm, conv3x3, init_conv_weights, make_norm
from selfsup.errors import SelfsupError


class ConvNet(nn.Module):
    """Four conv-norm-ReLU blocks and a global average pool: (B, C, H, W) -> (B, 8·width).

    Block widths are w, 2w, 4w, 8w. Blocks 2-4 downsample by stride 2 for images above
    16 px, so a 28 px image is pooled from a 4×4 map (as CIFAR ResNets end) and the widest
    block costs a third of what it would at 7×7; 9-16 px images skip the last stride, and
    for images of 8 px or less (scikit-learn digits) only block 2 downsamples, leaving 4×4.

    Args:
        in_channels: image channels C.
        image_size: side of the (square) training images; only decides the downsampling.
        width: channels of the first block; 32 gives embed_dim 256 and 0.39M parameters.
            16 is about 3× faster and 64 about 3× slower (fwd+bwd on a 2-core CPU).
        norm: "batch" (standard), "group" or "none".
    """

    def __init__(
        self,
        in_channels: int = 3,
        image_size: int = 32,
        width: int = 32,
        norm: NormKind = "batch",
    ) -> None:
        super().__init__()
        check_norm(norm)
        if width < 1:
            raise SelfsupError(f"ConvNet width must be a positive integer, got {width}")
        widths = (width, 2 * width, 4 * width, 8 * width)
        if image_size > 16:
            strides = (1, 2, 2, 2)
        elif image_size > 8:
            strides = (1, 2, 2, 1)
        else:
            strides = (1, 2, 1, 1)
        self.embed_dim: int = widths[-1]
        blocks: list[nn.Module] = []
        channels = in_channels
        for out_channels, stride in zip(widths, strides):
            blocks.append(
                nn.Sequential(
                    conv3x3(channels, out_channels, stride, bias=norm == "none"),
                    make_norm(norm, out_channels),
                    nn.ReLU(inplace=True),
                )
            )
            channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        init_conv_weights(self)

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, D, H', W'): H' = ⌈H/8⌉ above 16 px, ⌈H/4⌉ to 16 px, ⌈H/2⌉ to 8 px."""
        return self.blocks(x)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, D) globally average-pooled features, D = embed_dim."""
        return self.forward_features(x).mean(dim=(2, 3))  # (B, D)
