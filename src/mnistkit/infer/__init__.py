"""Inference: a person's image -> MNIST's 28x28 -> a model's answer; ONNX export."""
