"""Slow reference metrics that follow HoVer-Net / CellViT code literally (the oracle ships no metrics).

Re-typed from vqdang/hover_net metrics/stats_utils.py (get_fast_pq, remap_label, pair_coordinates) and
TIO-IKIM/CellViT cell_segmentation/utils/metrics.py (binarize, cell_detection_scores,
cell_type_detection_scores) and inference_cellvit_experiment_pannuke.py::calculate_step_metric. Per-instance
full-frame masks on purpose: this is the behaviour ours must equal. Also a seeded random label-map generator.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment


def ref_remap_label(pred):
    pred_id = list(np.unique(pred))
    if 0 in pred_id:
        pred_id.remove(0)
    if len(pred_id) == 0:
        return pred
    new_pred = np.zeros(pred.shape, np.int32)
    for idx, inst_id in enumerate(pred_id):
        new_pred[pred == inst_id] = idx + 1
    return new_pred


def ref_get_fast_pq(true, pred, match_iou=0.5):
    true = np.copy(true)
    pred = np.copy(pred)
    true_id_list = list(np.unique(true))
    pred_id_list = list(np.unique(pred))
    if 0 not in pred_id_list:
        pred_id_list = [0] + pred_id_list
    if 0 not in true_id_list:  # HoVer-Net assumes background; keep the id arithmetic valid
        true_id_list = [0] + true_id_list
    true_masks = [None]
    for t in true_id_list[1:]:
        true_masks.append(np.array(true == t, np.uint8))
    pred_masks = [None]
    for p in pred_id_list[1:]:
        pred_masks.append(np.array(pred == p, np.uint8))
    pairwise_iou = np.zeros([len(true_id_list) - 1, len(pred_id_list) - 1], dtype=np.float64)
    for true_id in true_id_list[1:]:
        t_mask = true_masks[true_id]
        pred_true_overlap = pred[t_mask > 0]
        for pred_id in list(np.unique(pred_true_overlap)):
            if pred_id == 0:
                continue
            p_mask = pred_masks[pred_id]
            total = (t_mask + p_mask).sum()
            inter = (t_mask * p_mask).sum()
            pairwise_iou[true_id - 1, pred_id - 1] = inter / (total - inter)
    if match_iou >= 0.5:
        pairwise_iou[pairwise_iou <= match_iou] = 0.0
        paired_true, paired_pred = np.nonzero(pairwise_iou)
        paired_iou = pairwise_iou[paired_true, paired_pred]
        paired_true = list(paired_true + 1)
        paired_pred = list(paired_pred + 1)
    else:
        paired_true, paired_pred = linear_sum_assignment(-pairwise_iou)
        paired_iou = pairwise_iou[paired_true, paired_pred]
        paired_true = list(paired_true[paired_iou > match_iou] + 1)
        paired_pred = list(paired_pred[paired_iou > match_iou] + 1)
        paired_iou = paired_iou[paired_iou > match_iou]
    unpaired_true = [idx for idx in true_id_list[1:] if idx not in paired_true]
    unpaired_pred = [idx for idx in pred_id_list[1:] if idx not in paired_pred]
    tp, fp, fn = len(paired_true), len(unpaired_pred), len(unpaired_true)
    dq = tp / (tp + 0.5 * fp + 0.5 * fn + 1.0e-6)
    sq = paired_iou.sum() / (tp + 1.0e-6)
    return [dq, sq, dq * sq], [paired_true, paired_pred, unpaired_true, unpaired_pred]


def ref_binarize(x):
    out = np.zeros([x.shape[0], x.shape[1]])
    count = 1
    for i in range(x.shape[2]):
        x_ch = x[:, :, i]
        unique_vals = np.unique(x_ch).tolist()
        unique_vals.remove(0)
        for j in unique_vals:
            x_tmp = x_ch == j
            out *= 1 - x_tmp
            out += count * x_tmp
            count += 1
    return out.astype("int32")


def ref_pair_coordinates(setA, setB, radius):
    setA_tile = np.repeat(np.expand_dims(setA, axis=1), setB.shape[0], axis=1)
    setB_tile = np.repeat(np.expand_dims(setB, axis=0), setA.shape[0], axis=0)
    pair_distance = np.sqrt(np.sum((setA_tile - setB_tile) ** 2, axis=-1))
    indicesA, paired_indicesB = linear_sum_assignment(pair_distance)
    pair_cost = pair_distance[indicesA, paired_indicesB]
    pairedA = indicesA[pair_cost <= radius]
    pairedB = paired_indicesB[pair_cost <= radius]
    unpairedA = np.array([i for i in range(setA.shape[0]) if i not in list(pairedA)], dtype=np.int64)
    unpairedB = np.array([i for i in range(setB.shape[0]) if i not in list(pairedB)], dtype=np.int64)
    return np.array(list(zip(pairedA, pairedB, strict=False))).reshape(-1, 2), unpairedA, unpairedB


def ref_cell_detection_scores(paired_true, paired_pred, unpaired_true, unpaired_pred):
    tp_d, fp_d, fn_d = paired_pred.shape[0], unpaired_pred.shape[0], unpaired_true.shape[0]
    return 2 * tp_d / (2 * tp_d + fp_d + fn_d), tp_d / (tp_d + fp_d), tp_d / (tp_d + fn_d)


@np.errstate(all="ignore")
def ref_cell_type_detection_scores(
    paired_true, paired_pred, unpaired_true, unpaired_pred, type_id, w=(2, 2, 1, 1)
):
    type_samples = (paired_true == type_id) | (paired_pred == type_id)
    paired_true = paired_true[type_samples]
    paired_pred = paired_pred[type_samples]
    tp_dt = ((paired_true == type_id) & (paired_pred == type_id)).sum()
    tn_dt = ((paired_true != type_id) & (paired_pred != type_id)).sum()
    fp_dt = ((paired_true != type_id) & (paired_pred == type_id)).sum()
    fn_dt = ((paired_true == type_id) & (paired_pred != type_id)).sum()
    fp_d = (unpaired_pred == type_id).sum()
    fn_d = (unpaired_true == type_id).sum()
    prec = (tp_dt + tn_dt) / (tp_dt + tn_dt + w[0] * fp_dt + w[2] * fp_d)
    rec = (tp_dt + tn_dt) / (tp_dt + tn_dt + w[1] * fn_dt + w[3] * fn_d)
    f1 = (2 * (tp_dt + tn_dt)) / (
        2 * (tp_dt + tn_dt) + w[0] * fp_dt + w[1] * fn_dt + w[2] * fp_d + w[3] * fn_d
    )
    return f1, prec, rec


def _cells(inst_map, type_of, check_contour=False):
    """Upstream-style cell dict content: ids ascending, moments centroid (x, y), type; with `check_contour`,
    instances whose first contour has < 3 points are skipped (CellViT `calculate_instances`)."""
    ids = [i for i in np.unique(inst_map) if i != 0]
    cents, types = [], []
    for i in ids:
        mask = inst_map == i
        rr, cc = np.nonzero(mask)
        rmin, rmax, cmin, cmax = rr.min(), rr.max() + 1, cc.min(), cc.max() + 1
        crop = mask[rmin:rmax, cmin:cmax].astype(np.uint8)
        if check_contour:
            contour = np.squeeze(
                cv2.findContours(crop, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0][0].astype("int32")
            )
            if contour.shape[0] < 3 or len(contour.shape) != 2:
                continue
        m = cv2.moments(crop)
        cents.append([m["m10"] / m["m00"] + cmin, m["m01"] / m["m00"] + rmin])
        types.append(type_of[i])
    return np.array(cents, np.float64).reshape(-1, 2), np.array(types, np.int64)


def ref_dataset(gts, preds, num_classes=6, radius=12.0):
    """CellViT calculate_step_metric + run_patch_inference on (inst_map, {id: type}) pairs.

    Differences from upstream kept out on purpose: no dummy [0,0] centroid for empty images (an upstream
    quirk that ours does not copy).
    """
    bpq, cls_pq = [], []
    pt_all, pp_all, ut_all, up_all = [], [], [], []
    for (g_inst, g_types), (p_inst, p_types) in zip(gts, preds, strict=False):
        g_type_map = np.zeros_like(g_inst)
        for i, t in g_types.items():
            g_type_map[g_inst == i] = t
        p_channels = np.zeros(g_inst.shape + (num_classes,), np.int32)
        for i, t in p_types.items():
            p_channels[..., t][p_inst == i] = i
        if len(np.unique(g_inst)) == 1:
            bpq.append(np.nan)
        else:
            [_, _, pq], _ = ref_get_fast_pq(ref_remap_label(g_inst), ref_binarize(p_channels[..., 1:]))
            bpq.append(pq)
        per = []
        for j in range(num_classes):
            pred_j = ref_remap_label(p_channels[..., j])
            true_j = ref_remap_label(g_inst * (g_type_map == j))
            if len(np.unique(true_j)) == 1:
                per.append(np.nan)
            else:
                [_, _, pq], _ = ref_get_fast_pq(pred_j, true_j, match_iou=0.5)
                per.append(pq)
        cls_pq.append(per)
        tc, tt = _cells(g_inst, g_types, check_contour=True)
        p_keep = {i: t for i, t in p_types.items() if t != 0}
        p_only = np.where(np.isin(p_inst, list(p_keep)), p_inst, 0)
        pc, ptypes = _cells(p_only, p_keep)
        if tc.shape[0] and pc.shape[0]:
            paired, ua, ub = ref_pair_coordinates(tc, pc, radius)
            pt_all.append(tt[paired[:, 0]] if paired.size else np.zeros(0, np.int64))
            pp_all.append(ptypes[paired[:, 1]] if paired.size else np.zeros(0, np.int64))
            ut_all.append(tt[ua])
            up_all.append(ptypes[ub])
        else:
            ut_all.append(tt)
            up_all.append(ptypes)
    pt, pp = np.concatenate(pt_all or [np.zeros(0, int)]), np.concatenate(pp_all or [np.zeros(0, int)])
    ut, up = np.concatenate(ut_all), np.concatenate(up_all)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mpq_img = [np.nanmean(p) for p in cls_pq]
            out = {
                "bPQ": float(np.nanmean(bpq)),
                "mPQ": float(np.nanmean(mpq_img)),
                "bpq_images": bpq,
                "class_pq_images": np.array(cls_pq),
            }
    out["f1"], out["precision"], out["recall"] = ref_cell_detection_scores(pt, pp, ut, up)
    out["per_class_f1"] = {
        c: ref_cell_type_detection_scores(pt, pp, ut, up, c)[0] for c in range(1, num_classes)
    }
    return out


# ---------------------------------------------------------------------------------------------------------
# Random data


def random_instance_map(
    rng: np.random.Generator, size: int = 64, n: int = 12, r: tuple[int, int] = (3, 9)
) -> np.ndarray:
    """Overlapping random ellipses, later ones on top; ids 1..n in drawing order (some may vanish)."""
    m = np.zeros((size, size), np.int32)
    for i in range(1, n + 1):
        cx, cy = (int(v) for v in rng.integers(0, size, 2))
        ax = (int(rng.integers(*r)), int(rng.integers(*r)))
        cv2.ellipse(m, (cx, cy), ax, float(rng.uniform(0, 180)), 0, 360, int(i), -1)
    return m


def perturb(
    rng: np.random.Generator, inst: np.ndarray, shift: int = 2, drop: float = 0.1, extra: int = 2
) -> np.ndarray:
    """A plausible prediction: shifted and eroded/dilated instances, some dropped, a few spurious ones."""
    size = inst.shape[0]
    out = np.zeros_like(inst)
    ids = [i for i in np.unique(inst) if i]
    for k, i in enumerate(ids):
        if rng.random() < drop:
            continue
        mask = (inst == i).astype(np.uint8)
        dy, dx = (int(v) for v in rng.integers(-shift, shift + 1, 2))
        mask = np.roll(mask, (dy, dx), axis=(0, 1))
        op = rng.integers(0, 3)
        if op == 1:
            mask = cv2.erode(mask, np.ones((3, 3), np.uint8))
        elif op == 2:
            mask = cv2.dilate(mask, np.ones((3, 3), np.uint8))
        out[mask > 0] = 100 + 3 * k  # non-contiguous ids on purpose
    spurious = random_instance_map(rng, size, extra)
    out = np.where((out == 0) & (spurious > 0), spurious + 5000, out)
    return out
