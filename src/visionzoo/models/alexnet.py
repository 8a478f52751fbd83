"""AlexNet — Krizhevsky, Sutskever, Hinton. "ImageNet Classification with Deep Convolutional Neural
Networks." NeurIPS 2012 (no arXiv version). And its single-tower revision from Krizhevsky, "One
weird trick for parallelizing convolutional neural networks," arXiv 1404.5997.

Paper map
---------
* §3.1: ReLU after every convolutional and fully connected layer         -> ``ConvLayer`` / head
* §3.2, Figure 2: two towers (one per GPU); conv2, conv4 and conv5 see only the kernel maps of
  their own tower, conv3 and the FC layers see both                      -> ``groups=towers``
* §3.3: local response normalization after the ReLU of conv1 and conv2, with
  b = a / (k + alpha * sum_j a_j^2)^beta over n adjacent maps, k=2, n=5, alpha=1e-4,
  beta=0.75                                                               -> ``ResponseNorm``
* §3.4: overlapping max pooling, z=3, s=2, after both normalization layers and after conv5
* §3.5, Figure 2: 96-256-384-384-256 kernels of 11x11x3 (stride 4), 5x5x48, 3x3x256, 3x3x192,
  3x3x192; FC layers of 4096 units; 1000-way softmax                     -> ``PAPER_LAYERS``
* §4.2: dropout (0.5) on the outputs of the first two FC layers          -> ``AlexNetHead``
* §5: weights N(0, 0.01); biases 1 in conv2, conv4, conv5 and the hidden FC layers, else 0
                                                                          -> ``init_weights``
* Abstract, §4: "60 million parameters"; Figure 2 caption: the neurons per layer.

Input size
----------
The paper says 224x224, but an 11x11 kernel at stride 4 gives Figure 2's 55x55 conv1 map only from
a 227x227 input (1 + (227 - 11) / 4 = 55); 224 gives 54. We use 227 without padding, as Caffe's
reference AlexNet does, so every map has the size Figure 2 shows (55, 27, 13, 6).

``alexnet_owt`` (one tower, "one weird trick", the layout torchvision ships): 64-192-384-256-256
kernels, no response normalization, conv1 padded by 2 so a 224 input gives 55x55. These widths are
those of Krizhevsky's released cuda-convnet2 single-GPU configuration, which torchvision follows;
the text of arXiv 1404.5997 lists 384 kernels for conv4 (torchvision PR #704).

Other input sizes, and deviations (flags)
-----------------------------------------
* ``fc_input="fixed"`` (default, both papers): fc6 is a fully connected layer on the 256x6x6 map,
  so the network takes only inputs whose pool5 map is 6x6: 227..258 pixels for ``alexnet``,
  223..254 for ``alexnet_owt`` (the design sizes 227 and 224 and what the pooling floors onto
  them). Any other size is a clear ``ValueError``.
  ``fc_input="adaptive"``: adaptive average pooling of the last map to 6x6 before fc6, as
  torchvision does; any input from 67 (``alexnet``) / 63 (``alexnet_owt``) pixels works, and at the
  design size it is the identity. ``port("torchvision", "alexnet")`` sets it.
* ``dropout_before_fc=True``: dropout on the *inputs* of fc6 and fc7 (torchvision's order,
  acknowledged as a mistake in vision #549) instead of on the outputs of fc6 and fc7 (§4.2). Only
  training differs; ``port()`` sets it for torchvision's weights.
* ``lrn=False`` drops the response normalization (§3.3 reports it lowers the top-1 error by 1.4 %).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from visionzoo.layers import StageSpec, ZooModel, default_cfg
from visionzoo.registry import Deviation, ModelInfo, Published, register_model

__all__ = ["AlexNet", "ConvLayer", "ResponseNorm"]


@dataclass(frozen=True)
class ConvLayer:
    """One convolutional layer of §3.5 / Figure 2."""

    kernel: int
    out: int  # number of kernels (both towers together)
    stride: int = 1
    padding: int = 0
    within_tower: bool = False  # connected only to the maps of its own tower (§3.2)
    lrn: bool = False  # response-normalized after the ReLU (§3.3)
    pool: bool = False  # followed by overlapping max pooling (§3.4)


# §3.5 and Figure 2: conv1 ... conv5 of the two-tower network (input 227x227, see the docstring).
PAPER_LAYERS = (
    ConvLayer(kernel=11, out=96, stride=4, padding=0, lrn=True, pool=True),
    ConvLayer(kernel=5, out=256, padding=2, within_tower=True, lrn=True, pool=True),
    ConvLayer(kernel=3, out=384, padding=1),  # conv3 sees both towers
    ConvLayer(kernel=3, out=384, padding=1, within_tower=True),
    ConvLayer(kernel=3, out=256, padding=1, within_tower=True, pool=True),
)

# One weird trick (arXiv 1404.5997) as released in cuda-convnet2's single-GPU config / torchvision.
OWT_LAYERS = (
    ConvLayer(kernel=11, out=64, stride=4, padding=2, pool=True),
    ConvLayer(kernel=5, out=192, padding=2, pool=True),
    ConvLayer(kernel=3, out=384, padding=1),
    ConvLayer(kernel=3, out=256, padding=1),
    ConvLayer(kernel=3, out=256, padding=1, pool=True),
)

FC_INPUT_MODES = ("fixed", "adaptive")


class ResponseNorm(nn.Module):
    """Local response normalization of §3.3, applied within each tower.

    b^i = a^i / (k + alpha * sum_{j=max(0, i-n/2)}^{min(N-1, i+n/2)} (a^j)^2)^beta.

    The sum runs over the maps of one GPU (the towers exchange nothing at this layer). PyTorch's
    ``local_response_norm`` divides alpha by n, so it is given ``n * alpha`` to match the paper.
    """

    def __init__(self, towers: int = 1, size: int = 5, k: float = 2.0, alpha: float = 1e-4,
                 beta: float = 0.75):
        super().__init__()
        self.towers, self.size, self.k, self.alpha, self.beta = towers, size, k, alpha, beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return response_norm(x, self.towers, self.size, self.size * self.alpha, self.beta, self.k)

    def extra_repr(self) -> str:
        return (f"towers={self.towers}, n={self.size}, k={self.k}, alpha={self.alpha}, "
                f"beta={self.beta}")


@torch.fx.wrap  # dtype-dependent: one node in an FX trace
def response_norm(x: torch.Tensor, towers: int, size: int, alpha: float, beta: float,
                  k: float) -> torch.Tensor:
    """Local response normalization within each tower's channels (see ``ResponseNorm``)."""
    n, c, h, w = x.shape
    x = x.reshape(n * towers, c // towers, h, w)  # (N, C, H, W) -> (N*T, C/T, H, W)
    # the sum of squares runs in float32 for half types (no bf16 avg_pool3d kernel on CPU, and
    # squares of activations overflow float16)
    y = F.local_response_norm(x.float() if x.dtype in (torch.bfloat16, torch.float16) else x,
                              size, alpha, beta, k)
    return y.to(x.dtype).reshape(n, c, h, w)  # back to (N, C, H, W)


class ConvStage(nn.Module):
    """conv -> ReLU -> (response normalization) -> (overlapping max pool)."""

    def __init__(self, in_chs: int, spec: ConvLayer, towers: int, lrn: bool):
        super().__init__()
        groups = towers if spec.within_tower else 1
        self.conv = nn.Conv2d(in_chs, spec.out, spec.kernel, spec.stride, spec.padding,
                              groups=groups)
        self.act = nn.ReLU(inplace=True)
        self.norm = ResponseNorm(towers) if spec.lrn and lrn else nn.Identity()
        self.pool = nn.MaxPool2d(3, stride=2) if spec.pool else nn.Identity()
        self.spec = spec

    def unpooled(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.act(self.conv(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.unpooled(x))


class AlexNetHead(nn.Module):
    """fc6 -> ReLU -> fc7 -> ReLU -> fc8 with dropout 0.5, on the flattened C x 6 x 6 map."""

    def __init__(self, in_chs: int, num_classes: int, fc_input: str = "fixed",
                 drop_rate: float = 0.5, dropout_before_fc: bool = False, width: int = 4096,
                 grid: int = 6):
        super().__init__()
        self.in_chs, self.grid, self.width = in_chs, grid, width
        self.hidden_size = width
        self.fc_input, self.dropout_before_fc = fc_input, dropout_before_fc
        self.fc6 = nn.Linear(in_chs * grid * grid, width)
        self.fc7 = nn.Linear(width, width)
        self.act = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(drop_rate)
        self.fc: nn.Module = nn.Identity()
        self.reset(num_classes)

    def reset(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.width, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.fc_input == "adaptive":
            x = F.adaptive_avg_pool2d(x, self.grid)
        else:
            x = check_fc6_input(x, self.in_chs, self.grid)
        x = x.flatten(1)  # (N, C, 6, 6) -> (N, C*36), channel-major
        if self.dropout_before_fc:  # torchvision's order: dropout, fc6, ReLU, dropout, fc7, ReLU
            x = self.act(self.fc7(self.drop(self.act(self.fc6(self.drop(x))))))
        else:  # §4.2: the outputs of the two hidden layers are dropped
            x = self.drop(self.act(self.fc7(self.drop(self.act(self.fc6(x))))))
        return x if pre_logits else self.fc(x)


@torch.fx.wrap  # one node in an FX trace; torch.export sees static sizes and traces it
def check_fc6_input(x: torch.Tensor, chs: int, g: int) -> torch.Tensor:
    """``x``, or a one-line error when pool5 is not the C x g x g map fc6 was built for."""
    if not torch.jit.is_tracing() and tuple(x.shape[-2:]) != (g, g):
        raise ValueError(
            f"fc6 takes a {chs}x{g}x{g} map (fc_input='fixed', the paper's fixed input size); got "
            f"{tuple(x.shape[1:])}. Use the design input size (pretrained_cfg) or "
            f"fc_input='adaptive' (torchvision's adaptive average pooling)")
    return x


class AlexNet(ZooModel):
    """Five convolutional layers, three fully connected layers (Figure 2)."""

    def __init__(self, layers: Sequence[ConvLayer] = PAPER_LAYERS, towers: int = 2,
                 lrn: bool = True, fc_input: str = "fixed", dropout_before_fc: bool = False,
                 drop_rate: float = 0.5, num_classes: int = 1000, in_chans: int = 3,
                 input_size: int = 227):
        super().__init__()
        if fc_input not in FC_INPUT_MODES:
            raise ValueError(f"fc_input must be one of {FC_INPUT_MODES}; got {fc_input!r}")
        if any(s.within_tower and s.out % towers for s in layers):
            raise ValueError(f"kernel counts must split evenly over {towers} towers")
        self.num_classes, self.in_chans = num_classes, in_chans
        self.towers, self.lrn = towers, lrn  # layout flags (see ports)
        self.fc_input, self.dropout_before_fc = fc_input, dropout_before_fc
        self.layers = nn.ModuleList()
        self.feature_info = []
        in_chs, reduction, border = in_chans, 1, 1
        # border: out = (size - border) // reduction + 1 for the unpadded convs/pools (see tests)
        for i, spec in enumerate(layers):
            self.layers.append(ConvStage(in_chs, spec, towers, lrn))
            in_chs = spec.out
            border += (spec.kernel - 1 - 2 * spec.padding) * reduction
            reduction *= spec.stride
            if spec.pool:
                self.feature_info.append({"name": f"conv{i + 1}", "channels": in_chs,
                                          "reduction": reduction, "border": border,
                                          "module": f"layers.{i}.norm"})
                border += 2 * reduction  # 3x3 window, stride 2, no padding
                reduction *= 2
        self.feature_info.append({"name": "pool5", "channels": in_chs, "reduction": reduction,
                                  "border": border, "module": f"layers.{len(layers) - 1}.pool"})
        self.num_features = in_chs
        self.head = AlexNetHead(in_chs, num_classes, fc_input, drop_rate, dropout_before_fc)
        self.pretrained_cfg = {**default_cfg((3, input_size, input_size)),
                               "fixed_input_size": fc_input == "fixed"}
        self.init_weights()

    def init_weights(self) -> None:
        """§5: weights from N(0, 0.01); biases 1 in conv2, conv4, conv5, fc6, fc7, else 0 (the
        positive biases give the ReLUs positive inputs early in training)."""
        ones = {self.layers[i].conv for i in (1, 3, 4) if i < len(self.layers)}
        ones |= {self.head.fc6, self.head.fc7}
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.constant_(m.bias, 1.0 if m in ones else 0.0)

    def trunk(self) -> list[tuple[Callable[[torch.Tensor], torch.Tensor], bool]]:
        """Each layer's map before its max pool is a map (conv1, conv2, conv5), and pool5,
        the input of fc6."""
        steps: list[tuple[Callable[[torch.Tensor], torch.Tensor], bool]] = []
        for i, layer in enumerate(self.layers):
            if isinstance(layer, ConvStage) and layer.spec.pool:  # (not pruned, pools)
                steps += [(layer.unpooled, True), (layer.pool, i == len(self.layers) - 1)]
            else:
                steps.append((layer, False))
        return steps

    def stage_specs(self) -> list[StageSpec]:
        """The layers of Figure 2 / §3.5, one row per layer."""
        rows = []
        for i, layer in enumerate(self.layers):
            s, conv = layer.spec, layer.conv
            desc = f"{s.kernel}x{s.kernel}x{conv.in_channels // conv.groups}, {s.out}"
            if s.stride > 1:
                desc += f", stride {s.stride}"
            if conv.groups > 1:
                desc += f" ({conv.groups} towers of {s.out // conv.groups})"
            elif self.towers > 1 and i > 0:
                desc += " (across towers)"
            if isinstance(layer.norm, ResponseNorm):
                desc += "; response norm"
            rows.append(StageSpec(f"conv{i + 1}", (f"layers.{i}.conv", f"layers.{i}.norm"), desc))
            if isinstance(layer.pool, nn.MaxPool2d):
                rows.append(StageSpec(f"pool{i + 1}", (f"layers.{i}.pool",),
                                      "3x3 max pool, stride 2 (overlapping)"))
        if isinstance(self.head, AlexNetHead):
            drop = "dropout 0.5"
            rows.append(StageSpec("fc6", ("head.fc6",), f"fc {self.head.width}, {drop}"))
            rows.append(StageSpec("fc7", ("head.fc7",), f"fc {self.head.width}, {drop}"))
            if self.num_classes:
                rows.append(StageSpec("fc8", ("head.fc",), f"fc {self.num_classes}, softmax"))
        return rows


# ---------------------------------------------------------------------------------------------
# Registered networks
# ---------------------------------------------------------------------------------------------

TV_META = "torchvision weights metadata (num_params, GFLOPS = G MACs)"

_ADAPTIVE = Deviation(
    flag="fc_input='adaptive'",
    summary="adaptive average pooling to 6x6 before fc6 (torchvision): other input sizes work; "
            "identity at the design size",
    overrides={"fc_input": "adaptive"})
_DROPOUT_ORDER = Deviation(
    flag="dropout_before_fc=True",
    summary="dropout on the inputs of fc6/fc7 (torchvision, vision #549) instead of on their "
            "outputs (§4.2); training only",
    overrides={"dropout_before_fc": True})


@register_model(ModelInfo(
    paper="ImageNet Classification with Deep Convolutional Neural Networks (NeurIPS 2012)",
    arxiv="none", family="alexnet",
    published=(
        Published("params", "60", "M", "Abstract and §4 ('60 million parameters')",
                  rounding="truncate",
                  note="a round figure: the layer sizes of §3.5 give 60.97 M (the paper writes "
                       "'60 million', i.e. truncated to whole millions)"),
        Published("top1_err", "40.7", "%", "Table 2 (ILSVRC-2012 val, 1 CNN)"),
        Published("top5_err", "18.2", "%", "Table 2 (ILSVRC-2012 val, 1 CNN)"),
    ),
    num_params=60_965_224, input_size=(3, 227, 227), min_input_size=227,
    deviations=(_ADAPTIVE, _DROPOUT_ORDER,
                Deviation(flag="lrn=False", summary="no response normalization (§3.3 ablation)",
                          overrides={"lrn": False})),
    notes="two towers (grouped conv2/conv4/conv5), LRN after conv1/conv2; input 227 (Figure 2's "
          "55x55 conv1 map needs 227 without padding); takes 227..258 pixels unless "
          "fc_input='adaptive'",
))
def alexnet(**kwargs) -> AlexNet:
    return AlexNet(PAPER_LAYERS, towers=2, **kwargs)


@register_model(ModelInfo(
    paper="One weird trick for parallelizing convolutional neural networks",
    arxiv="1404.5997", family="alexnet",
    published=(
        Published("params", "61100840", "", TV_META + "; arXiv 1404.5997 prints none"),
        Published("macs", "0.714", "G", TV_META),
    ),
    num_params=61_100_840, input_size=(3, 224, 224), min_input_size=223,
    deviations=(_ADAPTIVE, _DROPOUT_ORDER),
    references={"torchvision": "alexnet"},
    notes="single tower, 64-192-384-256-256 kernels (cuda-convnet2's released single-GPU config, "
          "as torchvision), no LRN; takes 223..254 pixels unless fc_input='adaptive'",
))
def alexnet_owt(**kwargs) -> AlexNet:
    kwargs.setdefault("lrn", False)
    return AlexNet(OWT_LAYERS, towers=1, input_size=224, **kwargs)
