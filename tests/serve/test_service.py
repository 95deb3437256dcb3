"""`cellvit-trt serve` end to end, through the Python client, against a real server process."""

from __future__ import annotations

import json
import threading
import time

import grpc
import numpy as np
import pytest
from tests.serve.conftest import canonical

from cellvit_trt.serve.client import ScannerClient, SlideFailed, slide_tiles

TILE = 256  # the scanner's tiles; the model's grid is 256 with stride 192, so they do not line up


def _stream(client, slide_id, path, tile=TILE, **kw):
    w, h, mpp, tiles = slide_tiles(path, tile)
    got = []
    slide = client.open_slide(
        slide_id, w, h, mpp, layout=(tile, tile), on_cells=lambda c, t: got.extend(c), **kw
    )
    return slide, list(tiles), got


def _leftovers(out):
    return sorted(p.name for p in out.iterdir() if p.name.startswith(".") and p.name != ".cellvit-serve.lock")


def test_python_client_gives_the_cells_of_a_file_run(server, serve_world, run_cells):
    with ScannerClient(server.target) as client:
        assert client.health() == "SERVING" and client.health("cellvit_trt.v1.Scanner") == "SERVING"
        d = client.describe()
        assert (d.backend, d.tile_size, d.overlap, d.target_mpp) == ("onnxruntime", 256, 64, 0.25)
        assert d.class_names[1] == "Neoplastic" and "grpcio" in d.versions and d.limits.max_slides == 4
        slide, tiles, got = _stream(client, "slide_a", serve_world["slide_a"])
        assert (slide.opened.grid_rows, slide.opened.grid_cols) == (3, 4)
        for x, y, rgb in tiles:
            slide.send_rgb(x, y, rgb)
        result = slide.close(timeout=120)
    expected = run_cells["slide_a"]
    assert len(expected) > 100
    assert canonical(got) == expected  # the live stream: every cell once, the values of cells.json
    written = json.loads((server.out / "slide_a" / "cells.json").read_text())["cells"]
    assert canonical(written) == expected
    assert sorted(c["cell_id"] for c in got) == list(range(len(got)))
    assert result.cells_total == len(expected) and result.tiles_processed == 12
    assert sum(c.count for c in result.counts) == len(expected)
    names = {p.rsplit("/", 1)[1] for p in result.outputs}
    assert {"cells.json", "cells.geojson", "cells.csv", "summary.json"} <= names
    assert result.timings.total_s > 0 and result.tiles_received == len(tiles)
    assert len(slide.tile_latency) == 12
    assert _leftovers(server.out) == []


def test_jpeg_tiles_on_any_layout(server, serve_world):
    """JPEG bytes and tiles of any size and position (strips): decoded and assembled like raw RGB."""
    import cv2

    w, h, mpp, tiles = slide_tiles(serve_world["slide_b"], 10_000)
    ((_, _, image),) = tiles  # the whole level 0
    with ScannerClient(server.target) as client:
        slide = client.open_slide("jpeg strips", w, h, mpp)  # no layout: any
        for y in range(0, h, 100):
            strip = image[y : y + 100]
            ok, buf = cv2.imencode(".jpg", strip[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
            slide.send_jpeg(0, y, w, strip.shape[0], buf.tobytes())
        result = slide.close(timeout=120)
    assert result.tiles_processed == 12 and result.cells_total > 50
    assert result.output_dir.endswith("/jpeg_strips-" + result.output_dir.rsplit("-", 1)[1])


def test_scanner_tiles_much_taller_than_model_tiles(server):
    """800 px scanner tiles on a 192 px model stride: each spans five model tile rows; the declared layout
    tells the server how many rows to buffer (more than its default of 3)."""
    image = np.full((1600, 400, 3), 225, np.uint8)
    image[::24, :] = image[:, ::24] = 60  # a grid of dark lines: something to segment
    with ScannerClient(server.target) as client:
        slide = client.open_slide("tall tiles", 400, 1600, 0.25, layout=(400, 800))
        for y in (0, 800):
            slide.send_rgb(0, y, image[y : y + 800])
        result = slide.close(timeout=120)
    assert result.tiles_processed == 9 * 3


def test_two_slides_interleaved_share_the_backend(server, serve_world, run_cells):
    with ScannerClient(server.target) as client:
        a, tiles_a, got_a = _stream(client, "inter_a", serve_world["slide_a"])
        b, tiles_b, got_b = _stream(client, "inter_b", serve_world["slide_b"], tile=200)
        for i in range(max(len(tiles_a), len(tiles_b))):  # one scanner, two slots, alternating
            for slide, tiles in ((a, tiles_a), (b, tiles_b)):
                if i < len(tiles):
                    slide.send_rgb(*tiles[i])
        res_b, res_a = b.close(timeout=120), a.close(timeout=120)
    assert canonical(got_a) == run_cells["slide_a"] and canonical(got_b) == run_cells["slide_b"]
    assert (res_a.cells_total, res_b.cells_total) == (len(got_a), len(got_b))


def test_a_bad_tile_fails_only_its_slide(server, serve_world, run_cells):
    with ScannerClient(server.target) as client:
        good, tiles, got = _stream(client, "good_neighbour", serve_world["slide_a"])
        bad, bad_tiles, _ = _stream(client, "bad_bytes", serve_world["slide_b"])
        for i, (x, y, rgb) in enumerate(tiles):
            good.send_rgb(x, y, rgb)
            if i == 3:
                bx, by, brgb = bad_tiles[1]
                import cv2

                jpeg = cv2.imencode(".jpg", brgb[..., ::-1])[1].tobytes()
                with pytest.raises(SlideFailed) as failed:
                    bad.send_jpeg(bx, by, brgb.shape[1], brgb.shape[0], jpeg[: len(jpeg) // 2])  # truncated
                    bad.close(timeout=60)
        result = good.close(timeout=120)
    assert failed.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "cannot decode the JPEG" in failed.value.details and "x=256 y=0" in failed.value.details
    assert canonical(got) == run_cells["slide_a"] and result.cells_total == len(got)
    assert not (server.out / "bad_bytes").exists() and _leftovers(server.out) == []


@pytest.mark.parametrize(
    "case, code, words",
    [
        ("outside", "OUT_OF_RANGE", "outside the declared"),
        ("wrong size", "INVALID_ARGUMENT", "expected 256x256"),
        ("short rgb", "INVALID_ARGUMENT", "bytes of RGB"),
        ("jpeg size", "INVALID_ARGUMENT", "the JPEG is 64x64 px, declared 256x256"),
        ("too many pixels", "RESOURCE_EXHAUSTED", "at most"),
    ],
)
def test_bad_tiles_get_a_status_that_says_what_was_expected(server, serve_world, case, code, words):
    import cv2

    from cellvit_trt.serve.v1 import scanner_pb2 as pb

    rgb = np.full((256, 256, 3), 200, np.uint8)
    tile = {
        "outside": pb.Tile(x=700, y=0, width=256, height=256, rgb=rgb.tobytes()),
        "wrong size": pb.Tile(x=0, y=0, width=128, height=256, rgb=rgb[:, :128].tobytes()),
        "short rgb": pb.Tile(x=0, y=0, width=256, height=256, rgb=rgb.tobytes()[:-3]),
        "jpeg size": pb.Tile(
            x=0, y=0, width=256, height=256, jpeg=cv2.imencode(".jpg", rgb[:64, :64])[1].tobytes()
        ),
        "too many pixels": pb.Tile(x=0, y=0, width=5000, height=5000, rgb=b""),
    }[case]
    with ScannerClient(server.target) as client:
        slide = client.open_slide(f"bad {case}", 768, 576, 0.25, layout=(256, 256))
        with pytest.raises(SlideFailed) as failed:
            slide._put(pb.SlideRequest(tile=tile))
            slide.close(timeout=60)
    assert failed.value.code.name == code and words in failed.value.details


def test_open_is_checked(server):
    with ScannerClient(server.target) as client:
        with pytest.raises(SlideFailed) as mpp:
            client.open_slide("x20 slide", 1000, 1000, 0.5)
        assert (
            mpp.value.code == grpc.StatusCode.FAILED_PRECONDITION and "does not resample" in mpp.value.details
        )
        with pytest.raises(SlideFailed) as resume:
            client.open_slide("never opened", 1000, 1000, 0.25, resume=True)
        assert resume.value.code == grpc.StatusCode.NOT_FOUND
        with pytest.raises(SlideFailed) as empty:
            client.open_slide("", 1000, 1000, 0.25)
        assert empty.value.code == grpc.StatusCode.INVALID_ARGUMENT
        escape = client.open_slide("../../escape/../x", 300, 300, 0.25)
        escape.send_rgb(0, 0, np.full((300, 300, 3), 230, np.uint8))
        result = escape.close(timeout=60)
    out = server.out.resolve()
    assert result.output_dir.startswith(str(out) + "/") and "/" not in result.output_dir[len(str(out)) + 1 :]
    assert not (out.parent / "escape").exists()


def test_a_disconnect_mid_slide_then_resume_gives_the_cells_of_a_file_run(server, serve_world, run_cells):
    with ScannerClient(server.target) as client:
        slide, tiles, got = _stream(client, "resumed", serve_world["slide_a"])
        for x, y, rgb in tiles[: len(tiles) // 2]:
            slide.send_rgb(x, y, rgb)
        deadline = time.monotonic() + 120
        while not got and time.monotonic() < deadline:  # some cells come back before the scanner "crashes"
            time.sleep(0.05)
        slide.disconnect()
        # read after the disconnect: cells may still arrive until the stream has ended, and a resume from an
        # earlier seq would be sent them again
        before, last_seq = len(got), slide.last_seq
        assert not (server.out / "resumed").exists(), "nothing appears before the slide is complete"
        w, h = slide.opened.grid_cols, slide.opened.grid_rows
        again = client.open_slide(
            "resumed",
            4 * 192,
            3 * 192,
            0.25,
            layout=(TILE, TILE),
            resume=True,
            last_seq=last_seq,
            on_cells=lambda c, t: got.extend(c),
        )
        assert again.opened.resumed and again.opened.replay_complete and (w, h) == (4, 3)
        have = {(p.x, p.y) for p in again.opened.received}
        assert 0 < len(have) <= len(tiles) // 2  # tiles still queued in the client were never sent
        for x, y, rgb in tiles:
            if (x, y) not in have:
                again.send_rgb(x, y, rgb)
        result = again.close(timeout=120)
    assert before > 0
    assert canonical(got) == run_cells["slide_a"]  # none lost, none twice across the reconnect
    assert result.cells_total == len(got) and _leftovers(server.out) == []


def test_a_disconnect_without_keep_discards_the_slide_cleanly(server, serve_world):
    with ScannerClient(server.target) as client:
        slide, tiles, _ = _stream(client, "dropped", serve_world["slide_a"], keep_seconds=0)
        for x, y, rgb in tiles[:5]:
            slide.send_rgb(x, y, rgb)
        slide.disconnect()
        deadline = time.monotonic() + 60
        while True:
            try:
                client.open_slide("dropped", 768, 576, 0.25, resume=True).disconnect()
            except SlideFailed as exc:
                assert exc.code == grpc.StatusCode.NOT_FOUND
                break
            assert time.monotonic() < deadline, "the slide was never discarded"
            time.sleep(0.5)
        # the server goes on serving: the same id again, to the end
        again, tiles, _ = _stream(client, "dropped", serve_world["slide_a"])
        for x, y, rgb in tiles:
            again.send_rgb(x, y, rgb)
        assert again.close(timeout=120).tiles_processed == 12
    assert _leftovers(server.out) == []


def test_discard_and_duplicate_ids(server, serve_world):
    with ScannerClient(server.target) as client:
        slide, tiles, _ = _stream(client, "discarded", serve_world["slide_a"])
        slide.send_rgb(*tiles[0])
        with pytest.raises(SlideFailed) as dup:
            client.open_slide("discarded", 768, 576, 0.25)
        assert dup.value.code == grpc.StatusCode.ALREADY_EXISTS
        with pytest.raises(SlideFailed) as cancelled:
            slide.discard()
            slide._raise()
        assert cancelled.value.code == grpc.StatusCode.CANCELLED
    assert not (server.out / "discarded").exists() and _leftovers(server.out) == []


def test_slides_at_once_are_bounded(server):
    with ScannerClient(server.target) as client:
        open_ = [client.open_slide(f"slot {i}", 500, 500, 0.25) for i in range(4)]
        with pytest.raises(SlideFailed) as full:
            client.open_slide("slot 4", 500, 500, 0.25)
        assert full.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "takes 4 at once" in full.value.details
        for slide in open_:
            with pytest.raises(SlideFailed):
                slide.discard()
                slide._raise()
        client.open_slide("slot 4", 500, 500, 0.25).discard()  # room again
    assert _leftovers(server.out) == []


def test_a_client_three_times_faster_than_the_backend_is_slowed_not_buffered(server):
    """A long, narrow slide (2 model tiles wide: row buffers are small) sent at 3x the backend's tile rate.
    The server must hold it back through flow control: server RSS stays within the stated bound, and the
    tiles sent but not yet finished never exceed what the bounded queues (plus gRPC's windows) hold."""
    import psutil

    proc = psutil.Process(server.proc.pid)
    rng = np.random.default_rng(5)
    w, h = 2 * 192, 180 * 192  # 2 x 180 model tiles: 40 MB of pixels in 192 px client tiles
    base = np.full((h, w, 3), 225, np.uint8)
    yy, xx = np.mgrid[0:h:24, 0:w:24]
    for y, x in zip(yy.ravel(), xx.ravel(), strict=True):
        if rng.random() < 0.3:
            base[y + 6 : y + 18, x + 6 : x + 18] = 60  # nuclei-like dark blobs: real post-processing work
    tiles = [(x, y, base[y : y + 192, x : x + 192]) for y in range(0, h, 192) for x in range(0, w, 192)]
    with ScannerClient(server.target) as client:
        limits = client.describe().limits
        warm = client.open_slide("rate probe", w, 30 * 192, 0.25)
        for x, y, t in tiles[:60]:
            warm.send_rgb(x, y, t)
        probe = warm.close(timeout=120)  # sent unthrottled: the server's own pace
        rate = probe.tiles_processed / probe.timings.total_s  # model tiles / s of this backend
        done = [0]
        lead: list[int] = []
        slide = client.open_slide(
            "fast client",
            w,
            h,
            0.25,
            layout=(192, 192),
            on_cells=lambda c, t: done.__setitem__(0, done[0] + (t is not None)),
        )
        rss0 = proc.memory_info().rss
        peak = [rss0]
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.05):
                peak[0] = max(peak[0], proc.memory_info().rss)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t0 = time.perf_counter()
        for i, (x, y, t) in enumerate(tiles):
            target = t0 + i / (3 * rate)
            time.sleep(max(0.0, target - time.perf_counter()))
            slide.send_rgb(x, y, t)
            lead.append(i + 1 - done[0])
        send_s = time.perf_counter() - t0
        result = slide.close(timeout=300)
        stop.set()
        sampler.join()
    offered_s = len(tiles) / (3 * rate)
    grown = peak[0] - rss0
    bound = limits.max_open_rows * 2 + limits.tiles_in_memory_per_slide  # model tiles held by the server
    print(
        f"\nfast client: backend {rate:.1f} tiles/s, offered {3 * rate:.1f}/s; sending took {send_s:.1f} s "
        f"(unthrottled {offered_s:.1f} s); server RSS +{grown / 2**20:.1f} MiB (bound {bound} tiles + "
        f"responses); max tiles ahead of results {max(lead)}"
    )
    assert result.tiles_processed == 360
    # Ahead of the results are: the stated bound (34), the responses waiting (OUTBOX, 16), the client's queue
    # and what gRPC's windows hold: 69 in every run so far, whatever the load. Never a growing share of the
    # slide: with the bound removed it was 144-412 (2/3 of the slide when the client really is 3x faster).
    assert max(lead) < 110, f"{max(lead)} tiles sent but not finished"
    # Buffering the slide would add ~2/3 of 40 MB; the bounded queues hold a few MB of pixels and maps.
    assert grown < 30 * 2**20, f"server RSS grew {grown / 2**20:.1f} MiB"


def test_the_client_command_streams_a_slide_file(server, serve_world, run_cells, tmp_path):
    import subprocess
    import sys

    from tests.serve.conftest import ROOT

    out = tmp_path / "cells.jsonl"
    slide = str(serve_world["slide_b"])
    cmd = [sys.executable, "-m", "cellvit_trt.serve.client", slide, "--target", server.target,
           "--tile", "512", "--id", "client command", "--cells", str(out)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert canonical([json.loads(line) for line in out.read_text().splitlines()]) == run_cells["slide_b"]
    assert "cells, 12 model tiles" in done.stdout and "tile latency p50" in done.stdout
