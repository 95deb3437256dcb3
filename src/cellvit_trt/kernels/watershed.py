"""Marker-controlled watershed with skimage.segmentation.watershed's exact semantics, in Numba.

Upstream calls `watershed(image, markers, mask=mask)` (connectivity 1, compactness 0, no watershed line;
skimage 0.19-0.26): markers outside the mask are dropped; marker pixels enter a binary min-heap in raster
order with priority (value, age 0); a popped pixel labels each unlabelled in-mask 4-neighbour (order up, left,
right, down) at push time, with priority (max(neighbour value, popped value), age) from a global age counter
incremented before every push. `watershed_masked` replays exactly that (heap in `heap.py`).

`watershed_fast`, used by the pipeline, gives the same labels much faster:
- every pushed pixel has a unique age, so (value, age) is a strict order except among markers (all age 0),
  where the heap layout decides; that can matter only between "boundary" markers (with an unlabelled in-mask
  neighbour at the start; interior markers never push) of one mask component (components never interact);
- restricted to a component, the global pop order is the component's own (value, age) order, so each
  4-connected mask component is flooded alone;
- a component whose markers all carry one label ends up entirely with it (it is 4-connected), so it is
  labelled directly;
- only if a multi-label component holds two boundary markers of equal value is the exact global heap
  replayed (phase 1) until every boundary marker at or below the highest such value has popped; the
  remaining items then go to their components (phase 2);
- in phase 2 the order is strict, so any exact queue gives the same labels: components flood on their items
  sorted by value (`rank_flood.py`), or, after a phase 1, on a radix heap (`radix_flood.py`).
`tests/kernels/test_building_blocks.py` checks both against skimage on tie-heavy inputs.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from cellvit_trt.kernels.blur_at import relief_at_components
from cellvit_trt.kernels.flood import flood
from cellvit_trt.kernels.fp import split_index
from cellvit_trt.kernels.heap import AGE_SHIFT, IDX_MASK, push
from cellvit_trt.kernels.layout import row_runs
from cellvit_trt.kernels.prefetch import prefetch_read
from cellvit_trt.kernels.radix_flood import NODES_EXTRA, flood_radix, pool_size
from cellvit_trt.kernels.rank_flood import flood_ranked
from cellvit_trt.kernels.ties import tied_components

__all__ = [
    "watershed_masked",
    "watershed_fast",
    "watershed_seeded",
    "watershed_seeded_into",
    "seeds_from_runs",
]


@njit(nogil=True, cache=True, inline="always")
def _hole_in(markers, mask, r, c, lab) -> bool:
    """Pixel (r, c) of marker `lab` lies outside the mask but its 8 neighbours are all in-mask pixels of
    that marker: dropping such pixels cannot disconnect the marker's in-mask part (a path through one goes
    round it on its 8 neighbours, which are 4-connected), so they do not count as a cut."""
    h, w = markers.shape
    if r == 0 or c == 0 or r == h - 1 or c == w - 1:
        return False
    for rr in range(r - 1, r + 2):
        for cc in range(c - 1, c + 2):
            if (rr != r or cc != c) and (markers[rr, cc] != lab or mask[rr, cc] == 0):
                return False
    return True


@njit(nogil=True, cache=True)
def watershed_masked(image: np.ndarray, markers: np.ndarray, mask: np.ndarray):
    """Exact replay of skimage: (int32 labels, bool cut[max_label+1]).

    `markers` (int32, 0 = none) are flooded over `image` (float64) inside `mask` (!= 0); `cut[label]` is True
    where part of that marker lay outside the mask, other than `_hole_in` pixels (the region may then be in
    pieces)."""
    h, w = image.shape
    npx = h * w
    out = np.zeros((h, w), np.int32)
    flat_out = out.reshape(-1)
    flat_img = image.reshape(-1)
    flat_mask = mask.reshape(-1)
    flat_mark = markers.reshape(-1)
    n_seed = 0
    n_mask = 0
    max_label = 0
    for p in range(npx):
        if flat_mark[p] > max_label:
            max_label = flat_mark[p]
    cut = np.zeros(max_label + 1, np.bool_)
    for p in range(npx):
        if flat_mask[p] != 0:
            n_mask += 1
            if flat_mark[p] != 0:
                flat_out[p] = flat_mark[p]
                n_seed += 1
        elif flat_mark[p] != 0 and not _hole_in(markers, mask, p // w, p % w, flat_mark[p]):
            cut[flat_mark[p]] = True
    capacity = n_seed + n_mask + 1
    values = np.empty(capacity, np.float64)
    keys = np.empty(capacity, np.int64)
    n = 0
    for p in range(npx):
        if flat_out[p] != 0:
            n = push(values, keys, n, flat_img[p], np.int64(p))  # age 0
    no_watch = np.zeros(1, np.bool_)
    flood(flat_img, flat_mask, flat_out, values, keys, n, np.int64(1), h, w, 0, no_watch, np.zeros(1))
    return out, cut


@njit(nogil=True, cache=True)
def seeds_from_runs(markers: np.ndarray, mask: np.ndarray, row_ptr, c0s, c1s, max_label: int, max_comp: int):
    """Watershed seeds: flat indices of the marker pixels inside `mask` in raster order (skimage's push
    order), cut[label] (that marker has pixels outside the mask other than `_hole_in` ones: its in-mask
    part, and so its watershed region, may be disconnected), seeded[label] (it has pixels inside: the
    labels the watershed's output holds, since labels spread from the seeds only; as long as cut) and, with
    `mask` the component labels of the mask, single[component] (int32, room for every label of `mask`
    present at a seed): the marker label of a component holding one, -1 for two or more, 0 for none.
    (row_ptr, c0s, c1s): the row runs of a map covering the markers (`layout.row_runs`); only their pixels
    are visited, once. max_label / max_comp: bounds on the labels of `markers` / `mask` (a label above them
    raises)."""
    h, w = markers.shape
    cut = np.zeros(max_label + 1, np.bool_)
    seeded = np.zeros(max_label + 1, np.bool_)
    single = np.zeros(max_comp + 1, np.int32)
    room = 0
    for i in range(c0s.shape[0]):
        room += c1s[i] - c0s[i]
    seeds = np.empty(room, np.int64)
    top_label = 0
    top_comp = 0
    count = 0
    for r in range(h):
        for i in range(row_ptr[r], row_ptr[r + 1]):
            c0 = c0s[i]
            mrow = markers[r, c0 : c1s[i]]
            krow = mask[r, c0 : c1s[i]]
            base = r * w + c0
            prev_lab = -1  # the last in-mask (label, component) seen on this run: its pixels just add seeds
            prev_cp = -1
            for c in range(mrow.shape[0]):
                lab = mrow[c]
                if lab == 0:
                    continue
                cp = krow[c]
                if lab == prev_lab and cp == prev_cp:
                    seeds[count] = base + c
                    count += 1
                    continue
                if lab > max_label or cp > max_comp or lab < 0 or cp < 0:
                    raise ValueError("seeds_from_runs: a label above the bound given")
                top_label = max(top_label, lab)
                top_comp = max(top_comp, np.int64(cp))
                if cp != 0:
                    seeds[count] = base + c
                    count += 1
                    prev_lab = lab
                    prev_cp = cp
                    seeded[lab] = True
                    if single[cp] == 0:  # rows read in order here: cheaper than from the seeds later
                        single[cp] = lab
                    elif single[cp] != lab:
                        single[cp] = -1
                elif not _hole_in(markers, mask, r, c0 + c, lab):
                    cut[lab] = True
    return seeds[:count], cut[: top_label + 1], seeded[: top_label + 1], single[: top_comp + 1]


@njit(nogil=True, cache=True)
def watershed_fast(
    image: np.ndarray,
    markers: np.ndarray,
    components: np.ndarray,
    members: np.ndarray,
    start: np.ndarray,
):
    """Same result as `watershed_masked(image, markers, components > 0)` (exact skimage order), much faster.

    (components, members, start) describe the 4-connected components of the mask as `label4_components`
    returns them. Returns (int32 labels, bool cut[max_label+1]) like `watershed_masked`."""
    marker_runs = row_runs((markers != 0).view(np.uint8))
    bounds = markers.max(), start.shape[0] - 2
    seeds, cut, _, single = seeds_from_runs(markers, components, *marker_runs, *bounds)
    out = watershed_seeded(image, markers, seeds, single, components, members, start)
    return out, cut


@njit(nogil=True, cache=True)
def watershed_seeded(
    image: np.ndarray,
    markers: np.ndarray,
    seeds: np.ndarray,
    single: np.ndarray,
    components: np.ndarray,
    members: np.ndarray,
    start: np.ndarray,
) -> np.ndarray:
    """`watershed_fast` from its seeds (the marker pixels inside the mask, flat indices in raster order) and
    each component's single marker label (`seeds_from_runs`).

    Touches only the mask components and the seeds (nothing per tile pixel), so a sparse tile costs little."""
    out = np.zeros(image.shape, np.int32)
    watershed_seeded_into(image, markers, seeds, single, components, members, start, out)
    return out


@njit(nogil=True, cache=True)
def watershed_seeded_into(image, markers, seeds, single, components, members, start, out, lazy=None) -> None:
    """`watershed_seeded` into `out` (int32 [H, W], zero on entry; written at the mask pixels only).

    With `lazy` = (dist, taps), `image` is a buffer (any contents) into which the relief -blur(dist) is
    computed where the flood reads it (`blur_at`): the multi-label components, and every component when the
    global heap must be replayed."""
    h, w = image.shape
    npx = h * w
    flat_out = out.reshape(-1)
    flat_img = image.reshape(-1)
    flat_comp = components.reshape(-1)
    flat_mark = markers.reshape(-1)
    n_comp = start.shape[0] - 2
    n_seed = seeds.shape[0]
    for k in range(n_seed):
        flat_out[seeds[k]] = flat_mark[seeds[k]]
    if n_seed == 0:
        return
    # A component whose markers all carry one label is flooded entirely with it (it is 4-connected), whatever
    # the order: label it directly (`lone`, after phase 1, which must replay the untouched global heap). Only
    # components with two or more labels need the priority flood.
    n_fg = members.shape[0]
    multi = np.zeros(n_comp + 1, np.bool_)
    lone = np.zeros(n_comp + 1, np.int32)
    for cp in range(1, min(single.shape[0], n_comp + 1)):
        if single[cp] < 0:
            multi[cp] = True
        else:
            lone[cp] = single[cp]
    if lazy is not None:
        relief_at_components(multi, members, start, lazy[0], components, lazy[1], image)
    # boundary markers per multi-label component (member order; phase 1 scans the image in raster order)
    n_multi = 0
    for cp in range(1, n_comp + 1):
        if multi[cp]:
            n_multi += start[cp + 1] - start[cp]
    bpix = np.empty(n_multi, np.int64)
    fpix = np.empty(n_multi, np.int64)  # and their unlabelled pixels
    fstart = np.zeros(n_comp + 2, np.int64)
    nf = 0
    bstart = np.zeros(n_comp + 2, np.int64)
    nb = 0
    inv_w = 1.0 / w
    for cp in range(1, n_comp + 1):
        bstart[cp] = nb
        fstart[cp] = nf
        if not multi[cp]:
            continue
        for k in range(start[cp], start[cp + 1]):
            p = members[k]
            if flat_out[p] == 0:
                fpix[nf] = p
                nf += 1
                continue
            # a marker with an unlabelled in-mask neighbour (written out: 4x faster than a helper call)
            r, c = split_index(p, w, inv_w)
            if (
                (r > 0 and flat_comp[p - w] != 0 and flat_out[p - w] == 0)
                or (c > 0 and flat_comp[p - 1] != 0 and flat_out[p - 1] == 0)
                or (c < w - 1 and flat_comp[p + 1] != 0 and flat_out[p + 1] == 0)
                or (r < h - 1 and flat_comp[p + w] != 0 and flat_out[p + w] == 0)
            ):
                bpix[nb] = p
                nb += 1
    bstart[n_comp + 1] = nb
    fstart[n_comp + 1] = nf
    # ties among a component's boundary markers: the hash finds the components with one, only those are sorted
    tie_max = np.full(n_comp + 1, -np.inf)
    n_watch = 0
    any_tie = False
    scratch = np.empty(nb + 1, np.float64)
    tied = tied_components(bpix, bstart, flat_img.view(np.int64), n_comp)
    for cp in range(1, n_comp + 1):
        if not tied[cp]:
            continue
        a, b = bstart[cp], bstart[cp + 1]
        vals = scratch[: b - a]
        for k in range(a, b):
            vals[k - a] = flat_img[bpix[k]]
        vals.sort()
        for k in range(1, b - a):
            if vals[k] == vals[k - 1]:
                tie_max[cp] = vals[k]
                any_tie = True
        if tie_max[cp] > -np.inf:
            for k in range(b - a):
                if vals[k] <= tie_max[cp]:
                    n_watch += 1
    biggest = 0
    for cp in range(1, n_comp + 1):
        if start[cp + 1] - start[cp] > biggest:
            biggest = start[cp + 1] - start[cp]
    age = np.int64(1)
    pending_head = np.full(n_comp + 1, -1, np.int64)
    if any_tie:
        if lazy is not None:  # the global heap reads every component
            relief_at_components(~multi, members, start, lazy[0], components, lazy[1], image)
        # phase 1: exact replay of the global heap (all markers, raster order) until the ties are resolved
        boundary = np.zeros(npx, np.bool_)
        for k in range(nb):
            boundary[bpix[k]] = True
        capacity = n_seed + n_fg + 1
        values = np.empty(capacity, np.float64)
        keys = np.empty(capacity, np.int64)
        n = 0
        for k in range(n_seed):
            p = seeds[k]
            n = push(values, keys, n, flat_img[p], np.int64(p))
        n, age = flood(flat_img, flat_comp, flat_out, values, keys, n, age, h, w, n_watch, boundary, tie_max)
        # the rest of the heap goes to its components; interior markers are inert and dropped
        it_val = np.empty(n, np.float64)
        it_key = np.empty(n, np.int64)
        it_next = np.empty(n, np.int64)
        m = 0
        for j in range(n):
            key = keys[j]
            p = key & IDX_MASK
            if (key >> AGE_SHIFT) == 0 and not boundary[p]:
                continue
            cp = flat_comp[p]
            it_val[m] = values[j]
            it_key[m] = key
            it_next[m] = pending_head[cp]
            pending_head[cp] = m
            m += 1
        it_bits = it_val.view(np.int64)
    else:
        it_bits = np.empty(0, np.int64)
        it_key = np.empty(0, np.int64)
        it_next = np.empty(0, np.int64)
    for cp in range(1, n_comp + 1):
        if lone[cp] != 0:
            for k in range(start[cp], start[cp + 1]):
                flat_out[members[k]] = lone[cp]
    # phase 2: each component on its own queue; no ties left, so pops follow the strict (value, age) order
    flat_bits = flat_img.view(np.int64)
    # the items phase 1 left carry their pushed priorities and ages: a radix heap takes them; otherwise
    # every priority is known up front and components flood on sorted ranks (`rank_flood`)
    rq = pool_size(biggest) if any_tie else 0
    pool_u = np.empty(rq, np.int64)
    pool_p = np.empty(rq, np.int64)
    pool_next = np.empty(rq, np.int64)
    tail = np.empty(NODES_EXTRA, np.int64)
    low = np.empty(NODES_EXTRA, np.int64)
    init_bits = np.empty(biggest if any_tie else 0, np.int64)
    init_p = np.empty(biggest if any_tie else 0, np.int64)
    rk = 0  # the most items one ranked flood queues: its component's boundary markers and free pixels
    if not any_tie:
        for cp in range(1, n_comp + 1):
            rk = max(rk, bstart[cp + 1] - bstart[cp] + fstart[cp + 1] - fstart[cp])
    ukey = np.empty(rk, np.int64)
    upix = np.empty(rk, np.int64)
    skey = np.empty(rk, np.int64)
    spix = np.empty(rk, np.int64)
    counts = np.empty(2 * rk + 1, np.int64)
    bits = np.empty(rk // 64 + 1, np.uint64)
    ages = np.empty(rk, np.int64)
    fifo = np.empty(rk, np.int64)
    ahead = 1
    for cp in range(1, n_comp + 1):
        if not multi[cp]:
            continue
        # While this component floods, the next one's relief, components and labels are fetched: a flood
        # jumps between rows 8 KiB apart that the hardware prefetcher does not follow (cold caches, in one
        # process against the code without: -0.3 ms of 5-7 ms on the dense and medium-real tiles).
        ahead = max(ahead, cp + 1)
        while ahead <= n_comp and not multi[ahead]:
            ahead += 1
        if ahead <= n_comp:
            for k in range(start[ahead], start[ahead + 1], 4):  # 8 float64 per 64-byte line
                prefetch_read(flat_img, members[k])
            for k in range(start[ahead], start[ahead + 1], 8):  # 16 int32
                if any_tie:  # the ranked flood reads no component labels
                    prefetch_read(flat_comp, members[k])
                prefetch_read(flat_out, members[k])
        if not any_tie:
            marks = bpix[bstart[cp] : bstart[cp + 1]]
            free = fpix[fstart[cp] : fstart[cp + 1]]
            scratch = (ukey, upix, skey, spix, counts, bits, ages, fifo)
            flood_ranked(flat_bits, flat_out, marks, free, h, w, *scratch)
            continue
        # what phase 1 left of this component, in age order (equal values pop by age)
        n_init = 0
        j = pending_head[cp]
        while j != -1:
            init_p[n_init] = j
            n_init += 1
            j = it_next[j]
        items = init_p[:n_init][np.argsort(it_key[init_p[:n_init]])]  # key = age << AGE_SHIFT | pixel
        for k in range(n_init):
            init_p[k] = it_key[items[k]] & IDX_MASK
            init_bits[k] = it_bits[items[k]]
        init = (init_bits[:n_init], init_p[:n_init])
        flood_radix(flat_bits, flat_comp, flat_out, *init, h, w, pool_u, pool_p, pool_next, tail, low)
