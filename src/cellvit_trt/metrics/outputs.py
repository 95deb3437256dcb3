"""Per-output agreement of two deployment-map dicts, streamed (the export gate's metric names)."""

from __future__ import annotations

import numpy as np


class OutputStats:
    """Streaming version of `export.gate.output_metrics` (same metric names)."""

    def __init__(self) -> None:
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
        self.hv_sum += float(d.sum(dtype=np.float64))
        self.hv_n += d.size

    def add_tissue(self, ref: np.ndarray, cand: np.ndarray) -> None:
        r, c = np.asarray(ref, np.float32), np.asarray(cand, np.float32)
        if r.size:
            self.tissue_max = max(self.tissue_max, float(np.abs(r - c).max()))
            self.tissue_equal += int((r.argmax(1) == c.argmax(1)).sum())
            self.tissue_n += r.shape[0]

    def result(self) -> dict[str, float]:
        nan = float("nan")

        def ratio(a: float, b: float) -> float:
            return a / b if b else nan

        return {
            "fg_agreement": ratio(self.fg_equal, self.px),
            "fg_dice": ratio(2 * self.fg_both, self.fg_ref + self.fg_cand),
            "type_agreement": ratio(self.type_equal, self.px),
            "type_agreement_in_fg": ratio(self.type_equal_in_fg, self.fg_ref),
            "hv_max_abs": self.hv_max if self.hv_n else nan,
            "hv_mean_abs": ratio(self.hv_sum, self.hv_n),
            "tissue_max_abs": self.tissue_max if self.tissue_n else nan,
            "tissue_argmax_agreement": ratio(self.tissue_equal, self.tissue_n),
        }
