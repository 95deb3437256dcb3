"""`cellvit-trt serve`: the scanner integration service (gRPC, schema `proto/cellvit_trt/v1/scanner.proto`).

A scanner streams a slide's tiles while it scans and gets the nuclei back while it scans; the backend stays
warm between slides and is shared by the slides open at once. Needs the `serve` extra (grpcio); nothing
outside this package imports it.

    settings.py        ServeSettings (YAML `serve:` section + flags)
    cli.py             `cellvit-trt serve` (light add_arguments)
    server.py          build and run the gRPC server (address, TLS, token, health, limits)
    service.py         the Scanner servicer: Describe, StreamSlide; the registry of open slides
    session.py         one slide: push source -> pipeline -> merge -> writers, detach/resume/discard
    shared_backend.py  one backend, many slides (a dispatcher thread keeps its batches in flight)
    tiles.py           checks and decodes a Tile message (bounds, layout, RGB or JPEG)
    messages.py        cells and results as protobuf messages (the fields of cells.json)
    outputs.py         slide id -> output folder (sanitised), staging folder, atomic swap
    security.py        local-only default, TLS credentials, token interceptor
    client.py          the Python client (`python -m cellvit_trt.serve.client slide.svs`)
    protogen.py        regenerates the committed stubs in v1/
"""
