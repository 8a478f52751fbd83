"""Data: ``datasets`` (ImageFolder, Fashion-MNIST IDX and CIFAR pickle layouts, deterministic
distributed samplers, loaders that skip undecodable images), ``presets`` (training / evaluation
transforms of a recipe), ``mixing`` (MixUp / CutMix) and ``transforms`` (reading any image file
and the transforms of a model's data config) and ``config`` (``resolve_data_config``,
``create_transform``). Import the submodules directly."""
