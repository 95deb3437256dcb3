"""cellvit-trt: CellViT nuclei instance segmentation and classification on NVIDIA hardware.

Stages (data flows one way): source -> tiles -> backend -> maps -> kernels -> cells -> merge -> writers.
Importing this package pulls in nothing heavy: PyTorch, ONNX, TensorRT and CUDA are imported where used.
"""

__version__ = "0.1.0"
