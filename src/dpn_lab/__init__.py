"""dpn_lab: train, sweep, inspect and compare Denoising Potential Networks."""

from dpn_lab.architecture import FullArchitecture
from dpn_lab.errors import NonFiniteRefinementError
from dpn_lab.extractors import CNNExtractor, MLPExtractor, build_extractor
from dpn_lab.potential import DenoisingPotential

__all__ = [
    "CNNExtractor",
    "DenoisingPotential",
    "FullArchitecture",
    "MLPExtractor",
    "NonFiniteRefinementError",
    "build_extractor",
]
