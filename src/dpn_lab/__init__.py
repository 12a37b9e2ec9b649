"""dpn_lab: train, sweep, inspect and compare Denoising Potential Networks."""

from dpn_lab.errors import NonFiniteRefinementError
from dpn_lab.model.extractors import CNNExtractor, MLPExtractor, build_extractor
from dpn_lab.model.network import FullArchitecture
from dpn_lab.model.potential import DenoisingPotential

__all__ = [
    "CNNExtractor",
    "DenoisingPotential",
    "FullArchitecture",
    "MLPExtractor",
    "NonFiniteRefinementError",
    "build_extractor",
]
