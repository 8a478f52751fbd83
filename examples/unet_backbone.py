"""A U-Net on a visionzoo backbone: the VGG paper's usual second life, as a segmentation encoder.

``create_model(name, features_only=True)`` returns the backbone's stage maps (NCHW, shallowest
first) and their ``feature_info`` (channels, reduction). The decoder below only reads those, so
the same code builds a U-Net on ``vgg16_bn`` (maps at reductions 1, 2, 4, 8, 16, 32), ``resnet50``
(2, 4, 8, 16, 32) or ``swin_t`` (4, 8, 16, 32) by changing one name::

    python examples/unet_backbone.py                        # vgg16_bn
    python examples/unet_backbone.py --backbone resnet50 --size 72 88

``--pretrained`` loads the backbone's ImageNet weights (downloaded once, or from the cache).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F

import visionzoo as vz


def conv_bn_relu(in_chs: int, out_chs: int) -> nn.Sequential:
    """3x3 conv (no bias: BN follows), BatchNorm, ReLU; keeps the spatial size."""
    return nn.Sequential(nn.Conv2d(in_chs, out_chs, 3, padding=1, bias=False),
                         nn.BatchNorm2d(out_chs), nn.ReLU(inplace=True))


class DecoderBlock(nn.Module):
    """Upsample the deeper map to the skip's size, concatenate, two 3x3 conv-BN-ReLU."""

    def __init__(self, in_chs: int, skip_chs: int, out_chs: int):
        super().__init__()
        self.convs = nn.Sequential(conv_bn_relu(in_chs + skip_chs, out_chs),
                                   conv_bn_relu(out_chs, out_chs))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        # The skip's actual size, not 2x the input: with odd sizes a stride-2 stage floors (VGG's
        # max-pool) or ceils (ResNet's padded convs), so "x2" would be off by one.
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.convs(torch.cat([x, skip], dim=1))


class UNet(nn.Module):
    """Encoder: a visionzoo backbone's stage maps. Decoder: one block per skip, deepest first."""

    def __init__(self, backbone: str = "vgg16_bn", num_classes: int = 2,
                 pretrained: bool | str = False, min_width: int = 16, max_width: int = 256):
        super().__init__()
        self.encoder = vz.create_model(backbone, features_only=True, pretrained=pretrained)
        chs = self.encoder.feature_info.channels()   # e.g. vgg16_bn: [64, 128, 256, 512, 512, 512]
        # The deepest map is the decoder's input; every shallower one is a skip connection.
        # Each block halves its skip's width, clamped to [min_width, max_width], to keep the
        # decoder light (ResNet-50's 2048 + 1024 channels would otherwise cost 14M parameters).
        blocks, in_chs = [], chs[-1]
        for skip_chs in reversed(chs[:-1]):
            out_chs = min(max_width, max(min_width, skip_chs // 2))
            blocks.append(DecoderBlock(in_chs, skip_chs, out_chs))
            in_chs = out_chs
        self.decoder = nn.ModuleList(blocks)
        self.head = nn.Conv2d(in_chs, num_classes, kernel_size=1)   # per-pixel class logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(x)                      # shallowest first, all NCHW
        y = feats[-1]
        for block, skip in zip(self.decoder, reversed(feats[:-1]), strict=True):
            y = block(y, skip)
        # The shallowest map is at reduction 1 (VGG), 2 (ResNet's stem) or 4 (Swin's patches):
        # bring it to the input's size, then classify every pixel.
        y = F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.head(y)


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="vgg16_bn", help="any visionzoo model name")
    parser.add_argument("--num-classes", type=int, default=2)
    parser.add_argument("--size", type=int, nargs="+", default=[224], metavar=("H", "W"))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--pretrained", action="store_true",
                        help="ImageNet weights for the encoder")
    args = parser.parse_args(argv)
    if len(args.size) > 2:
        parser.error("--size takes H or H W")
    h, w = (args.size * 2)[:2]                       # one value: a square input

    model = UNet(args.backbone, args.num_classes, pretrained=args.pretrained).eval()
    info = model.encoder.feature_info
    print(f"encoder {args.backbone}: channels {info.channels()}, reductions {info.reduction()}")
    with torch.no_grad():
        mask = model(torch.randn(args.batch, 3, h, w))
    print(f"input {(args.batch, 3, h, w)} -> mask logits {tuple(mask.shape)}")
    enc, total = count_params(model.encoder), count_params(model)
    print(f"params: encoder {enc / 1e6:.2f}M, decoder+head {(total - enc) / 1e6:.2f}M, "
          f"total {total / 1e6:.2f}M")


if __name__ == "__main__":
    main()
