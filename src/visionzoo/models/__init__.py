"""Importing this package registers every family (one import line per family file)."""

from visionzoo.models import resnet  # noqa: F401
