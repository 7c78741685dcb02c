"""Cross-model transfer: paired activations of two models on the same texts (``pairs``) and the maps fitted on
them from one residual stream to another (``maps``)."""
