"""`validate` on PanNuke-layout folds with exact ground truth.

The runners here are real deployment-map producers, not doubles of a backend: `TruthRunner` renders the
ground truth of each tile as the maps a perfect network would output (fg, HoVer HV targets, type map), and can
drop or relabel cells, so the effect on every metric is known. The CLI test runs the tiny PyTorch model.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from cellvit_trt.cli import main
from cellvit_trt.errors import InputError
from cellvit_trt.metrics.pannuke import write_pannuke_fold
from cellvit_trt.metrics.validate import validate, validate_all
from cellvit_trt.synthetic.targets import make_targets

T = 128  # data tile: nuclei of ~16-20 px, as at 40x


class TruthRunner:
    """Maps of a perfect model for known tiles (looked up by content), white/unknown tiles give background."""

    def __init__(self, fold_images, insts, types, tile_size, drop_every=0, retype=None, name="truth"):
        self.lookup = {im.tobytes(): (m, t) for im, m, t in zip(fold_images, insts, types, strict=False)}
        self.tile_size = tile_size
        self.drop_every = drop_every
        self.retype = retype or {}
        self.name = name

    def _maps(self, sub):
        hit = self.lookup.get(sub.tobytes())
        if hit is None:
            return np.zeros((T, T), np.uint8), np.zeros((2, T, T), np.float32), np.zeros((T, T), np.uint8)
        inst, tmap = hit
        inst = inst.copy()
        if self.drop_every:
            inst[(inst % self.drop_every == 0) & (inst > 0)] = 0
        ids = np.unique(inst)[1:]
        lut = np.zeros(int(inst.max()) + 1, np.uint8)
        for i in ids:
            t = int(np.bincount(tmap[inst == i]).argmax())
            lut[i] = self.retype.get(t, t)
        tg = make_targets(inst, lut)
        return tg.binary, tg.hv, tg.type_map

    def infer(self, images):
        if len(images) > getattr(self, "max_batch", len(images)):
            raise ValueError(f"{self.name}: {len(images)} tiles > max batch {self.max_batch}")
        n, s = images.shape[0], images.shape[1]
        k = s // T
        out = {
            "fg": np.zeros((n, s, s), np.uint8),
            "hv": np.zeros((n, 2, s, s), np.float16),
            "type_map": np.zeros((n, s, s), np.uint8),
            "tissue_logits": np.zeros((n, 19), np.float32),
        }
        for b in range(n):
            for r in range(k):
                for c in range(k):
                    ys, xs = slice(r * T, (r + 1) * T), slice(c * T, (c + 1) * T)
                    fg, hv, ty = self._maps(np.ascontiguousarray(images[b, ys, xs]))
                    out["fg"][b, ys, xs], out["hv"][b, :, ys, xs], out["type_map"][b, ys, xs] = fg, hv, ty
        return out


@pytest.fixture(scope="module")
def fold(tmp_path_factory):
    rng = np.random.default_rng(7)
    n = 6
    insts, types, images = [], [], []
    for _ in range(n):
        # separated blobs on a grid, jittered: the post-processing recovers them from perfect maps
        inst = np.zeros((T, T), np.int32)
        k = 0
        for r in range(4):
            for c in range(4):
                if rng.random() < 0.8:
                    k += 1
                    cy, cx = r * 32 + 16 + int(rng.integers(-3, 4)), c * 32 + 16 + int(rng.integers(-3, 4))
                    rr, cc = np.ogrid[:T, :T]
                    inst[(rr - cy) ** 2 / 100 + (cc - cx) ** 2 / rng.uniform(40, 90) <= 1] = k
        tmap = np.where(inst > 0, (inst % 3) + 1, 0).astype(np.uint8)
        insts.append(inst)
        types.append(tmap)
        images.append(rng.integers(0, 256, (T, T, 3), dtype=np.uint8))
    tissues = ["Colon", "Lung", "Colon", "Skin", "Lung", "Colon"]
    root = write_pannuke_fold(
        tmp_path_factory.mktemp("pannuke") / "fold2", np.stack(images), insts, types, tissues
    )
    return root, images, insts, types


def test_identical_candidate_agrees_fully_and_gt_metrics_match(fold):
    root, images, insts, types = fold
    ref = TruthRunner(images, insts, types, T)
    cand = TruthRunner(images, insts, types, T, name="same")
    # 80 cells cannot show fp32's cell_type_agreement >= 0.995 at 95 % (a perfect score's Wilson lower bound
    # is 0.954): the gate says so, and an identical candidate passes the thresholds the sample can show
    strict = validate(cand, ref, root, limit=0, batch=4, precision="fp32")
    assert strict.failures == [f for f in strict.failures if f.startswith("cell_type_agreement")] != []
    rep = validate(cand, ref, root, limit=0, batch=4, precision="int8")
    assert rep.passed, rep.format()
    assert rep.tiles == 6
    for k in ("bpq", "mpq", "f1", "cell_type_agreement", "fg_agreement", "type_agreement"):
        assert rep.metrics[k] == 1.0, k
    g = rep.ground_truth["reference"]
    assert g["dataset"]["f1"] > 0.97 and g["dataset"]["bPQ"] > 0.85  # perfect maps through the watershed
    assert rep.ground_truth["candidate"]["dataset"] == g["dataset"]
    assert set(g["per_tissue"]) == {"Colon", "Lung", "Skin"}


def test_dropped_cells_lower_recall_and_fail_the_gate(fold):
    root, images, insts, types = fold
    ref = TruthRunner(images, insts, types, T)
    cand = TruthRunner(images, insts, types, T, drop_every=4)
    rep = validate(cand, ref, root, limit=0, batch=3, precision="fp16")
    n_ref = sum(len(np.unique(m)) - 1 for m in insts)
    n_drop = sum(int(((np.unique(m) % 4) == 0).sum()) - 1 for m in insts)  # -1: id 0
    d = rep.agreement["dataset"]
    assert d["recall"] == pytest.approx((n_ref - n_drop) / n_ref, abs=0.02)
    assert d["precision"] == pytest.approx(1.0, abs=0.01)
    assert not rep.passed and any(f.startswith("f1 =") for f in rep.failures)
    worst = rep.worst_tiles[0]
    assert worst["bpq"] < 1.0 and worst["candidate_cells"] < worst["reference_cells"]
    # against ground truth, the candidate loses about the same recall
    gr, gc = rep.ground_truth["reference"]["dataset"], rep.ground_truth["candidate"]["dataset"]
    assert gc["recall"] == pytest.approx(gr["recall"] * (n_ref - n_drop) / n_ref, abs=0.03)


def test_relabelled_types_lower_mpq_and_type_agreement(fold):
    root, images, insts, types = fold
    ref = TruthRunner(images, insts, types, T)
    cand = TruthRunner(images, insts, types, T, retype={1: 2})
    rep = validate(cand, ref, root, limit=0, batch=4, precision="fp32")
    n1 = sum(int(((np.unique(m)[1:] % 3) + 1 == 1).sum()) for m in insts)
    n = sum(len(np.unique(m)) - 1 for m in insts)
    assert rep.metrics["bpq"] == 1.0 and rep.metrics["f1"] == 1.0
    assert rep.metrics["cell_type_agreement"] == pytest.approx(1 - n1 / n, abs=0.01)
    assert rep.metrics["mpq"] < 0.75
    assert rep.agreement["per_class"]["Neoplastic"]["pq"] == 0.0
    assert not rep.passed


def test_several_candidates_share_one_reference_pass(fold):
    root, images, insts, types = fold
    ref = TruthRunner(images, insts, types, T)
    calls = []
    orig = ref.infer
    ref.infer = lambda x: calls.append(len(x)) or orig(x)
    same = TruthRunner(images, insts, types, T, name="same")
    dropped = TruthRunner(images, insts, types, T, drop_every=3, name="dropped")
    dropped.max_batch = 2  # like an engine whose profile stops at 2 tiles
    a, b = validate_all([same, dropped], ref, root, limit=0, batch=6, precision="int8")  # 80 cells: see above
    assert calls == [2, 2, 2]  # the reference ran once per batch for both candidates, batches capped
    assert (a.candidate, b.candidate) == ("same", "dropped")
    assert a.passed and a.metrics["f1"] == 1.0
    assert not b.passed and b.agreement["dataset"]["recall"] < 0.8
    assert a.ground_truth["reference"] == b.ground_truth["reference"]


def test_a_different_model_is_refused(fold):
    root, images, insts, types = fold
    other = TruthRunner(images, insts, types, T, name="other")
    orig = other.infer
    other.infer = lambda x: {**orig(x), "tissue_logits": np.zeros((len(x), 4), np.float32)}
    with pytest.raises(
        InputError, match=r"other returns 'tissue_logits' of shape \[6, 4\], the reference \[6, 19\]"
    ):
        validate(other, TruthRunner(images, insts, types, T), root, limit=0, batch=6)


def test_small_tiles_are_laid_out_in_larger_model_tiles(fold):
    root, images, insts, types = fold
    direct = validate(
        TruthRunner(images, insts, types, T), TruthRunner(images, insts, types, T), root, limit=0
    )
    mosaic = validate(
        TruthRunner(images, insts, types, 2 * T),
        TruthRunner(images, insts, types, 2 * T),
        root,
        limit=0,
        batch=1,
    )
    assert mosaic.tiles == 6 and any("laid out 2x2" in n for n in mosaic.notes)
    assert mosaic.ground_truth["reference"]["dataset"] == direct.ground_truth["reference"]["dataset"]


def test_cli_demo_model_writes_json_and_exit_codes(tmp_path):
    pytest.importorskip("torch")
    ckpt = "demo"  # the shipped tiny model trained on synthetic tiles
    # Two candidates on synthetic tiles with the shipped demo model: one reference pass, real cells,
    # a JSON with both reports.
    both = tmp_path / "both.json"
    pixel_only = tmp_path / "pixel-only.yaml"
    pixel_only.write_text("fp32:\n  min: {fg_agreement: 0.9999, type_agreement: 0.9995}\n")
    args = [
        "validate",
        "--candidate",
        "torch",
        "--candidate",
        "torch",
        "--reference",
        ckpt,
        "--data",
        "synthetic:1",
        "--seed",
        "77",
        "--thresholds",  # one tile's 3 cells show no cell-level figure at 95 %: pixel bounds only here
        str(pixel_only),
        "--json",
        str(both),
    ]
    assert main(args) == 0
    doc = json.loads(both.read_text())
    assert doc["passed"] and len(doc["reports"]) == 2 and doc["settings"]["data"] == "synthetic:1"
    rep = doc["reports"][0]
    assert rep["tiles"] == 1 and rep["metrics"]["fg_agreement"] == 1.0
    assert rep["agreement"]["dataset"]["tp"] > 0 and rep["metrics"]["bpq"] == 1.0  # the model finds nuclei
    assert rep["ground_truth"]["reference"]["dataset"]["f1"] > 0.3
    # A folder of plain images: tissue tiles at the given tile size, agreement only (no ground truth);
    # impossible thresholds give exit status 3 and still a report.
    folder = tmp_path / "images"
    folder.mkdir()
    yy, xx = np.mgrid[:200, :300]
    tex = (120 + 60 * np.sin(xx / 5.0) * np.cos(yy / 7.0))[..., None] * np.array([1.0, 0.6, 0.9])
    cv2.imwrite(str(folder / "a.png"), np.clip(tex, 0, 255).astype(np.uint8)[..., ::-1])
    strict = tmp_path / "strict.yaml"
    strict.write_text("fp32:\n  min:\n    fg_agreement: 1.5\n")
    img_json = tmp_path / "img.json"
    img_args = [
        "validate",
        "--candidate",
        "torch",
        "--reference",
        str(ckpt),
        "--data",
        str(folder),
        "--tile-size",
        "128",
        "--limit",
        "1",
        "--thresholds",
        str(strict),
        "--json",
        str(img_json),
    ]
    assert main(img_args) == 3
    img = json.loads(img_json.read_text())
    assert img["ground_truth"] is None and img["tiles"] == 1 and not img["passed"]
    assert img["failures"] == ["fg_agreement = 1, required >= 1.5"]
    assert (
        main(["validate", "--candidate", "torch", "--reference", str(ckpt), "--data", str(tmp_path / "no")])
        == 1
    )


def test_synthetic_tiles_have_ground_truth():
    from cellvit_trt.kernels import PostProcessor, PostProcessParams
    from cellvit_trt.metrics import Evaluator, Instances
    from cellvit_trt.synthetic.tile import generate_tile
    from cellvit_trt.synthetic.world import TISSUE_NAMES

    tiles = [generate_tile(T, seed=10 + k) for k in range(3)]
    args = ([t.image for t in tiles], [t.inst_map for t in tiles], [t.type_map for t in tiles], T)
    runner = TruthRunner(*args)
    rep = validate(runner, TruthRunner(*args), "synthetic:3", seed=10, synthetic_tile=T)
    assert rep.tiles == 3 and rep.metrics["f1"] == 1.0
    # The same numbers computed here from the generator's own ground truth
    pp = PostProcessor(PostProcessParams.for_magnification(40))
    ev = Evaluator()
    for t in tiles:
        maps = runner.infer(t.image[None])
        cells = Instances.from_tile(
            pp.process_tile(maps["fg"][0], maps["hv"][0].astype(np.float32), maps["type_map"][0])
        )
        truth = Instances.from_maps(t.inst_map, t.type_map)
        ev.add(truth, cells, TISSUE_NAMES[t.tissue] if t.tissue >= 0 else "mixed")
    want = ev.result()
    got = rep.ground_truth["reference"]
    assert got["dataset"] == want["dataset"] and got["per_tissue"] == want["per_tissue"]
    assert got["dataset"]["tp"] > 0
