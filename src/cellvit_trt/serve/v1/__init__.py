"""Generated from proto/cellvit_trt/v1/scanner.proto by `python -m cellvit_trt.serve.protogen`; do not edit."""
