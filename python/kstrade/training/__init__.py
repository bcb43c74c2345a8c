"""The `train` command's logic: training set from the live FeatureEngine, labels, time splits,
PyTorch training, ONNX export, calibration and honest evaluation.

torch is imported only by `nets` and `trainer` (the optional `train` extra); `dataset` and
`evaluation` are plain numpy so CI and the inference stage can use them.
"""
