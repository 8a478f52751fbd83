"""Data: ``datasets`` (ImageFolder, Fashion-MNIST IDX and CIFAR pickle layouts, deterministic
distributed samplers, loaders that skip undecodable images), ``presets`` (training / evaluation
transforms of a recipe), ``mixing`` (MixUp / CutMix) and ``transforms`` (reading any image file
and the evaluation transform of a model's ``pretrained_cfg``). Import the submodules directly."""
