"""What the two GPU backends share on top of the slot ring: results, timings and the event timeline."""

from __future__ import annotations

import numpy as np

from cellvit_trt.runtime.backends.base import Backend, normalise_outputs
from cellvit_trt.runtime.cuda.slots import Slot, SlotRing


class RingBackend(Backend):
    """A backend whose batches stream through a `SlotRing` (`self.ring`, made in `_activate`)."""

    ring: SlotRing | None = None

    @property
    def slots(self) -> list[Slot]:
        return self.ring.slots if self.ring is not None else []

    @property
    def timeline(self) -> list[dict[str, float]] | None:
        """Set to [] to record each batch's event times (ms from activation) for overlap reports."""
        return self.ring.timeline if self.ring is not None else None

    @timeline.setter
    def timeline(self, value: list[dict[str, float]] | None) -> None:
        if self.ring is not None:
            self.ring.timeline = value

    def _result(self, handle: int) -> dict[str, np.ndarray]:
        out, self.last_timings = self.ring.release(self.ring.collect(handle))
        return normalise_outputs(out, self.name)

    def _close_ring(self) -> None:
        if self.ring is not None:
            self.ring.close()  # drains its streams first: nothing queued may still use the memory
            self.ring = None
