"""`cellvit-trt bench`: trtexec-style throughput and latency reports for any backend."""
