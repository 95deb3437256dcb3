"""A CUDA / TensorRT / PyTorch-CUDA semantics simulator for the GPU backends' tests (no GPU here).

- `cuda.CudaSim`: the `cuda.bindings.runtime` surface the code uses, with streams as queues that run later in
  an order the test picks (`SCHEDULES`), events, stream capture and graphs, separate host/device memory and
  hazard detection. See its module docstring for each rule and its source.
- `tensorrt.make_tensorrt`: the `tensorrt` module surface (builder 10.x/11.x and runtime) over a `CudaSim`.
- `torch_sim.make_torch`: the slice of `torch` / `torch.cuda` the PyTorch-CUDA backend uses.
- `harness.SimGPU`: installs them into the code under test (`api.set_cudart`, `sys.modules["tensorrt"]`).
"""
