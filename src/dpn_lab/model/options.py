"""The values each model option accepts, one list each.

Read by the modules that implement the options and by `dpn_lab.config`, which checks a command line before
torch is imported (a mistake costs one line in about a second, not the seconds torch and Lightning take)."""

COVARIANCES = ("full", "diag", "spherical", "lowrank")  # the families of P_i = A_i^T A_i
GRADIENT_IMPLS = ("closed_form", "autograd")
GRAD_MODES = ("unrolled", "detach")
EXTRACTOR_NAMES = ("mlp", "cnn", "resnet18", "resnet34")
IMAGE_EXTRACTORS = ("cnn", "resnet18", "resnet34")  # take (channels, height, width) inputs
MIN_RESNET_SIDE = 8  # the ResNets' three stride-2 stages divide the side by 8
CNN_NORMS = ("batch", "group")
CNN_POOLS = ("avg", "flatten")
INIT_METHODS = ("kmeans", "gmm")
CENTER_UPDATES = ("none", "ema")
REFINEMENTS = ("potential", "residual_mlp")  # residual_mlp: the capacity-matched control
