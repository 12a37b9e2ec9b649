"""DPNClassifier: shapes on every supported image size, per-step logits, and gradient flow."""

import pytest
import torch

from dpn_lab.model.extractors import build_extractor
from dpn_lab.model.network import DPNClassifier
from dpn_lab.model.potential import DenoisingPotential, PotentialConfig


def make_model(extractor: str, input_shape, n_steps: int = 3, grad_mode: str = "unrolled") -> DPNClassifier:
    torch.manual_seed(0)
    potential = DenoisingPotential(
        PotentialConfig(16, 5, n_steps=n_steps, grad_mode=grad_mode, covariance="full")
    )
    return DPNClassifier(build_extractor(extractor, input_shape, 16), potential, n_classes=10)


@pytest.mark.parametrize("extractor", ["mlp", "cnn"])
@pytest.mark.parametrize("input_shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_logits_for_every_image_size(extractor, input_shape):
    model = make_model(extractor, input_shape).eval()
    images = torch.rand(4, *input_shape)
    logits = model(images)
    per_step = model(images, all_steps=True)
    assert logits.shape == (4, 10) and per_step.shape == (4, 4, 10)
    torch.testing.assert_close(per_step[-1], logits)
    # step 0 reads the unrefined features
    torch.testing.assert_close(per_step[0], model.classifier(model.features(images)))


def test_mlp_reads_flat_inputs():
    model = make_model("mlp", (64,)).eval()
    assert model(torch.rand(3, 64)).shape == (3, 10)


def test_cnn_rejects_flat_input_shapes():
    with pytest.raises(ValueError, match=r"CNNExtractor needs \(channels, height, width\) inputs"):
        build_extractor("cnn", (64,), 16)
    with pytest.raises(
        ValueError, match="extractor='resnet' is not allowed; choose one of: mlp, cnn, resnet18"
    ):
        build_extractor("resnet", (1, 8, 8), 16)


def extractor_gradient_norm(model: DPNClassifier) -> float:
    images = torch.rand(8, 1, 8, 8)
    torch.nn.functional.cross_entropy(model(images), torch.arange(8)).backward()
    return sum(float(p.grad.abs().sum()) for p in model.extractor.parameters() if p.grad is not None)


def test_detach_starves_the_extractor_and_unrolled_feeds_it():
    assert extractor_gradient_norm(make_model("mlp", (1, 8, 8), grad_mode="detach")) == 0
    assert extractor_gradient_norm(make_model("mlp", (1, 8, 8), grad_mode="unrolled")) > 0


def test_zero_steps_freezes_the_potential():
    model = make_model("mlp", (1, 8, 8), n_steps=0)
    assert not any(p.requires_grad for p in model.potential.parameters())
    images = torch.rand(2, 1, 8, 8)
    torch.testing.assert_close(model(images), model.classifier(model.features(images)))


@pytest.mark.parametrize("norm", ["batch", "group"])
@pytest.mark.parametrize("pool", ["avg", "flatten"])
def test_cnn_norm_and_pool_options(norm, pool):
    extractor = build_extractor("cnn", (1, 28, 28), 16, norm=norm, pool=pool).eval()
    layers = [type(m).__name__ for m in extractor.modules()]
    assert ("BatchNorm2d" in layers) == (norm == "batch") and ("GroupNorm" in layers) == (norm == "group")
    assert ("AdaptiveAvgPool2d" in layers) == (pool == "avg")
    head = extractor.net[-1]
    assert head.in_features == (64 if pool == "avg" else 64 * 7 * 7)  # 28 -> 14 -> 7 after two poolings
    images = torch.rand(3, 1, 28, 28)
    assert extractor(images).shape == (3, 16)
    if norm == "group":  # the same computation for one image alone as inside a batch
        torch.testing.assert_close(extractor(images[:1]), extractor(images)[:1])


def test_cnn_options_are_checked():
    with pytest.raises(
        ValueError, match="model.extractor_kwargs.norm='layer' is not allowed; choose one of: batch, group"
    ):
        build_extractor("cnn", (1, 8, 8), 16, norm="layer")
    with pytest.raises(ValueError, match="every width must be a multiple of 8"):
        build_extractor("cnn", (1, 8, 8), 16, channels=[12])
    with pytest.raises(ValueError, match="pooling stages shrink a 8x8 image to nothing"):
        build_extractor("cnn", (1, 8, 8), 16, channels=[8, 8, 8, 8])


def stage_sides(extractor: torch.nn.Module, images: torch.Tensor) -> list[int]:
    """The side of the feature maps leaving the stem and each of the four residual stages."""
    sides = []
    for name in ("maxpool", "layer1", "layer2", "layer3", "layer4"):
        getattr(extractor.net, name).register_forward_hook(lambda m, i, out: sides.append(out.shape[-1]))
    extractor(images)
    return sides


@pytest.mark.slow  # an 11M-parameter network on CPU
@pytest.mark.parametrize("norm", ["batch", "group"])
def test_resnet18_has_the_cifar_stem_and_projects_to_feature_dim(norm):
    """Against torchvision's ImageNet ResNet-18: the same blocks, a 3x3 stride-1 stem in place of the 7x7
    stride-2 one, no max-pool, so 32x32 maps enter the first stage and 4x4 leave the last."""
    from torchvision.models import resnet18

    torch.manual_seed(0)
    extractor = build_extractor("resnet18", (3, 32, 32), 16, norm=norm).eval()
    images = torch.rand(2, 3, 32, 32)
    assert extractor(images).shape == (2, 16)
    assert stage_sides(extractor, images) == [32, 32, 16, 8, 4]
    stem = extractor.net.conv1
    assert (stem.kernel_size, stem.stride, stem.in_channels) == ((3, 3), (1, 1), 3)
    imagenet = sum(p.numel() for p in resnet18(num_classes=16).parameters())
    ours = sum(p.numel() for p in extractor.parameters())
    assert ours == imagenet - 7 * 7 * 3 * 64 + 3 * 3 * 3 * 64
    norms = {type(m).__name__ for m in extractor.modules() if "Norm" in type(m).__name__}
    assert norms == {"BatchNorm2d" if norm == "batch" else "GroupNorm"}


@pytest.mark.slow  # ResNet-34 on CPU
def test_resnet34_stages_and_one_channel_images():
    extractor = build_extractor("resnet34", (1, 28, 28), 8).eval()
    assert [len(getattr(extractor.net, f"layer{i}")) for i in range(1, 5)] == [3, 4, 6, 3]
    assert extractor(torch.rand(2, 1, 28, 28)).shape == (2, 8)


@pytest.mark.slow  # an 11M-parameter network on CPU
def test_resnet18_on_8x8_digits_ends_in_1x1_maps_and_smaller_images_are_refused():
    extractor = build_extractor("resnet18", (1, 8, 8), 16).eval()
    assert stage_sides(extractor, torch.rand(2, 1, 8, 8)) == [8, 8, 4, 2, 1]
    with pytest.raises(ValueError, match="ResNet18Extractor needs images of at least 8x8, got 4x6"):
        build_extractor("resnet18", (1, 4, 6), 16)
    with pytest.raises(ValueError, match=r"ResNet34Extractor needs \(channels, height, width\) inputs"):
        build_extractor("resnet34", (64,), 16)


def test_the_extractors_allowed_are_the_extractors_built_and_refused_in_the_preflights_words():
    """One rule object per choice: the constructors refuse a value with the same line as the check before
    torch loads, and the names the config allows are the classes there are."""
    from omegaconf import OmegaConf

    from dpn_lab.config import MODEL_RULES
    from dpn_lab.errors import ConfigError
    from dpn_lab.model.extractors import EXTRACTORS
    from dpn_lab.model.options import EXTRACTOR_NAMES

    assert tuple(EXTRACTORS) == EXTRACTOR_NAMES
    for key, build in (
        ("model.extractor", lambda: build_extractor("resnet", (1, 8, 8), 16)),
        ("model.extractor_kwargs.pool", lambda: build_extractor("cnn", (1, 8, 8), 16, pool="max")),
    ):
        value = "resnet" if key == "model.extractor" else "max"
        with pytest.raises(ConfigError) as built:
            build()
        with pytest.raises(ConfigError) as checked:
            MODEL_RULES[key].require(key, OmegaConf.create({"v": value}).v)
        assert str(built.value) == str(checked.value)
