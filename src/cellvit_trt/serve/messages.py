"""Cells as protobuf messages with the fields and values of cells.json, and back to cells.json dicts.

    cells_to_pb(batch, grid, class_names) -> list[pb.Cell]      # server: one per cell of a CellBatch
    cell_to_dict(pb_cell) -> dict                                 # client: the cells.json entry again

The values come from the cells.json writer's own record (`writers.upstream_json.cell_record`), so the stream
and the written cells.json cannot disagree.
"""

from __future__ import annotations

from typing import Any

from cellvit_trt.serve.v1 import scanner_pb2 as pb


def _flat(pairs: list) -> list:
    return [v for pair in pairs for v in pair]


def _pairs(values) -> list[list]:
    values = [_num(v) for v in values]
    return [values[i : i + 2] for i in range(0, len(values), 2)]


def _num(v: float) -> float | int:
    return int(v) if float(v).is_integer() else float(v)


def cells_to_pb(batch, grid, class_names: tuple[str, ...]) -> list[pb.Cell]:
    from cellvit_trt.runtime.writers.upstream_json import cell_record

    out = []
    for i in range(len(batch)):
        c = cell_record(batch, i, grid)
        t = c["type"]
        msg = pb.Cell(
            cell_id=c["cell_id"],
            bbox=_flat(c["bbox"]),
            centroid=c["centroid"],
            contour=_flat(c["contour"]),
            type_prob=c["type_prob"],
            type=t,
            type_name=class_names[t] if 0 <= t < len(class_names) else str(t),
            patch_coordinates=c["patch_coordinates"],
            cell_status=c["cell_status"],
            offset_global=c["offset_global"],
            edge_position=c["edge_position"],
        )
        info = c.get("edge_information")
        if info is not None:
            msg.edge_information.position.extend(info["position"])
            msg.edge_information.edge_patches.extend(_flat(info["edge_patches"] or []))
        out.append(msg)
    return out


def cell_to_dict(cell: pb.Cell) -> dict[str, Any]:
    """The cells.json entry of a streamed cell (same keys and values; JSON numbers as int where integral)."""
    d: dict[str, Any] = {
        "bbox": _pairs(cell.bbox),
        "centroid": [_num(v) for v in cell.centroid],
        "contour": _pairs(cell.contour),
        "type_prob": cell.type_prob,
        "type": cell.type,
        "patch_coordinates": list(cell.patch_coordinates),
        "cell_status": cell.cell_status,
        "offset_global": list(cell.offset_global),
        "edge_position": cell.edge_position,
        "cell_id": cell.cell_id,
    }
    if cell.edge_position:
        patches = _pairs(cell.edge_information.edge_patches)
        d["edge_information"] = {
            "position": list(cell.edge_information.position),
            "edge_patches": patches or None,
        }
    return d
