"""Trained models on data sets: inference, the classical baseline, prediction files, ONNX / TorchScript export."""
