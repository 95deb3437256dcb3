"""Per-output agreement of two deployment-map dicts, streamed (the export gate's metric names).

Besides the totals it keeps one row of sums per tile (`tile_columns()`), the unit that the confidence
intervals of `metrics.intervals` resample."""

from __future__ import annotations

import numpy as np

PER_TILE = ("px", "fg_equal", "type_equal", "hv_sum", "hv_n")


class OutputStats:
    """Per-output agreement, one tile (`add_maps`) or batch of tissue logits (`add_tissue`) at a time; the
    export gate and `validate` both use it (same metric names)."""

    def __init__(self) -> None:
        self.tiles: dict[str, list[float]] = {k: [] for k in PER_TILE}
        self.tissue_rows: list[float] = []
        self.token_rows: dict[str, list[float]] = {"tokens_abs_sum": [], "tokens_ref_abs_sum": []}
        self.tokens_max = 0.0
        self.px = 0
        self.fg_equal = 0
        self.fg_ref = 0
        self.fg_cand = 0
        self.fg_both = 0
        self.type_equal = 0
        self.type_equal_in_fg = 0
        self.hv_max = 0.0
        self.hv_sum = 0.0
        self.hv_n = 0
        self.tissue_max = 0.0
        self.tissue_equal = 0
        self.tissue_n = 0

    def add_maps(self, ref: dict[str, np.ndarray], cand: dict[str, np.ndarray]) -> None:
        fr, fc = ref["fg"] > 0, cand["fg"] > 0
        self.px += fr.size
        self.fg_equal += int((fr == fc).sum())
        self.fg_ref += int(fr.sum())
        self.fg_cand += int(fc.sum())
        self.fg_both += int((fr & fc).sum())
        same = ref["type_map"] == cand["type_map"]
        self.type_equal += int(same.sum())
        self.type_equal_in_fg += int(same[fr].sum())
        d = np.abs(ref["hv"].astype(np.float32) - cand["hv"].astype(np.float32))
        self.hv_max = max(self.hv_max, float(d.max()) if d.size else 0.0)
        hv_sum = float(d.sum(dtype=np.float64))
        self.hv_sum += hv_sum
        self.hv_n += d.size
        for key, value in zip(
            PER_TILE, (fr.size, int((fr == fc).sum()), int(same.sum()), hv_sum, d.size), strict=True
        ):
            self.tiles[key].append(float(value))

    def add_tokens(self, ref: np.ndarray, cand: np.ndarray) -> None:
        """Token maps of one tile ([E, h, w]): relative mean error and the worst element."""
        r = np.asarray(ref, np.float32)
        e = np.abs(r - np.asarray(cand, np.float32))
        self.tokens_max = max(self.tokens_max, float(e.max()) if e.size else 0.0)
        self.token_rows["tokens_abs_sum"].append(float(e.sum(dtype=np.float64)))
        self.token_rows["tokens_ref_abs_sum"].append(float(np.abs(r).sum(dtype=np.float64)))

    def add_tissue(self, ref: np.ndarray, cand: np.ndarray) -> None:
        r, c = np.asarray(ref, np.float32), np.asarray(cand, np.float32)
        if r.size:
            self.tissue_max = max(self.tissue_max, float(np.abs(r - c).max()))
            equal = r.argmax(1) == c.argmax(1)
            self.tissue_equal += int(equal.sum())
            self.tissue_n += r.shape[0]
            self.tissue_rows.extend(float(v) for v in equal)

    def tile_columns(self) -> dict[str, np.ndarray]:
        """One value per tile of every sum above (for `metrics.intervals.figure_intervals`)."""
        cols = {k: np.asarray(v, np.float64) for k, v in self.tiles.items()}
        if self.tissue_rows:
            cols["tissue_equal"] = np.asarray(self.tissue_rows, np.float64)
            cols["tissue_n"] = np.ones(len(self.tissue_rows))
        if self.token_rows["tokens_abs_sum"]:
            cols.update({k: np.asarray(v, np.float64) for k, v in self.token_rows.items()})
        return cols

    def result(self) -> dict[str, float]:
        nan = float("nan")

        def ratio(a: float, b: float) -> float:
            return a / b if b else nan

        out = {
            "fg_agreement": ratio(self.fg_equal, self.px),
            "fg_dice": ratio(2 * self.fg_both, self.fg_ref + self.fg_cand),
            "type_agreement": ratio(self.type_equal, self.px),
            "type_agreement_in_fg": ratio(self.type_equal_in_fg, self.fg_ref),
            "hv_max_abs": self.hv_max if self.hv_n else nan,
            "hv_mean_abs": ratio(self.hv_sum, self.hv_n),
            "tissue_max_abs": self.tissue_max if self.tissue_n else nan,
            "tissue_argmax_agreement": ratio(self.tissue_equal, self.tissue_n),
        }
        if self.token_rows["tokens_abs_sum"]:
            abs_sum, ref_sum = (sum(v) for v in self.token_rows.values())
            out["tokens_max_abs"] = self.tokens_max
            out["tokens_rel_mean_abs"] = abs_sum / max(ref_sum, 1e-12)
        return out
