"""The method: the potential and its math, the feature extractors, the network, mixture initialisation, and
the LightningModule that trains them."""
