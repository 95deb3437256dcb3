"""Post-processing constants (HoVer-Net `process_np_hv` as ported by CellViT), named and documented."""

from __future__ import annotations

from dataclasses import dataclass

from cellvit_trt.errors import InputError

__all__ = ["PostProcessParams"]


@dataclass(frozen=True)
class PostProcessParams:
    """Constants of the CellViT tile post-processor.

    Defaults are the x40 values of the upstream WSI path (cellvit==1.0.9 `postprocessing_numpy`), which
    hard-codes them whatever the magnification because tiles are resampled to ~0.25 mpp.
    """

    #: A float foreground probability p counts as nucleus when p > threshold: the argmax of the 2-class
    #: softmax with ties going to background. Upstream thresholds the argmax (0/1) at >= 0.5, the same thing.
    fg_threshold: float = 0.5
    #: Foreground components (4-connected) with fewer pixels are dropped before everything else (upstream: 10,
    #: hard-coded at every magnification).
    blob_min_size: int = 10
    #: Sobel kernel size on the min-max normalised HV maps (x40: 21, x20: 11).
    sobel_ksize: int = 21
    #: Pixels whose edge energy is >= this are not marker pixels.
    marker_threshold: float = 0.4
    #: Side of the elliptic structuring element of the marker opening (cv2.MORPH_ELLIPSE).
    opening_size: int = 5
    #: Side of the Gaussian blur (sigma derived by OpenCV from the size) of the watershed relief.
    blur_ksize: int = 3
    #: Marker components (4-connected) with fewer pixels are dropped (x40: 10, x20: 3).
    object_size: int = 10
    #: Cells whose majority type is background (0) are left out of the table (they stay in the instance map).
    drop_background: bool = True
    #: Cells whose first contour has fewer points are left out of the table, as upstream.
    min_contour_points: int = 3

    def __post_init__(self) -> None:
        for name in ("blob_min_size", "object_size", "min_contour_points"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InputError(f"PostProcessParams.{name}: expected an int >= 0, got {value!r}")
        for name in ("sobel_ksize", "blur_ksize"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1 or value % 2 == 0 or value > 31:
                raise InputError(f"PostProcessParams.{name}: expected an odd int in 1..31, got {value!r}")
        if not isinstance(self.opening_size, int) or self.opening_size < 1:
            raise InputError(
                f"PostProcessParams.opening_size: expected an int >= 1, got {self.opening_size!r}"
            )
        for name in ("fg_threshold", "marker_threshold"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
                raise InputError(f"PostProcessParams.{name}: expected a number in [0, 1], got {value!r}")

    @classmethod
    def for_magnification(cls, magnification: float, **overrides) -> PostProcessParams:
        """Upstream constants for x40 (Sobel 21, object size 10) or x20 (Sobel 11, object size 3).

        The x20 pair comes from TIO-IKIM/CellViT post_proc_cellvit.py; the cellvit package's WSI path always
        uses the x40 pair because it resamples tiles to ~0.25 mpp first.
        """
        table = {40: (21, 10), 20: (11, 3)}
        try:
            key = int(magnification)
        except (TypeError, ValueError):
            key = None
        if key not in table or float(magnification) != key:
            raise InputError(f"magnification: expected 20 or 40, got {magnification!r}")
        ksize, object_size = table[key]
        return cls(**{"sobel_ksize": ksize, "object_size": object_size, **overrides})
