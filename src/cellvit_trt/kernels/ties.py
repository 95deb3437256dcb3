"""Which mask components hold two boundary markers of equal value: the watershed's only order ambiguity.

`watershed.py` replays skimage's global heap only for such ties, which are rare. Gathering and sorting every
multi-label component's boundary values to look for them took 0.4 ms of a dense tile's 4 ms watershed
(0.7 of 6 on medium real shapes); one pass through an open-addressing hash of (component, value) finds the
components with a tie in about half that, and the caller sorts only those.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from cellvit_trt.kernels.radix_flood import order_key

__all__ = ["tied_components"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX = np.uint64(0xFF51AFD7ED558CCD)


@njit(nogil=True, cache=True)
def tied_components(bpix, bstart, flat_bits, n_comp):
    """bool[n_comp + 1]: True for a component cp two of whose boundary markers (flat indices
    bpix[bstart[cp]:bstart[cp + 1]]) have values that compare equal (0.0 and -0.0 included); `flat_bits` the
    image's float64 bits."""
    tied = np.zeros(n_comp + 1, np.bool_)
    nb = bstart[n_comp + 1]
    bits = 4
    while (1 << bits) < 2 * nb:  # load factor <= 1/2
        bits += 1
    size = 1 << bits
    slot_cp = np.zeros(size, np.int64)  # 0: empty (components are numbered from 1)
    slot_key = np.empty(size, np.int64)
    shift = np.uint64(64 - bits)
    for cp in range(1, n_comp + 1):
        a = bstart[cp]
        b = bstart[cp + 1]
        if b - a < 2:
            continue
        for k in range(a, b):
            key = order_key(flat_bits[bpix[k]])
            j = np.int64(((np.uint64(key) ^ (np.uint64(cp) * _GOLDEN)) * _MIX) >> shift)
            while slot_cp[j] != 0 and not (slot_cp[j] == cp and slot_key[j] == key):
                j = (j + 1) & (size - 1)
            if slot_cp[j] != 0:
                tied[cp] = True
            else:
                slot_cp[j] = cp
                slot_key[j] = key
    return tied
