from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DescribeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DescribeResponse(_message.Message):
    __slots__ = ("model", "precision", "tile_size", "overlap", "target_mpp", "mpp_tolerance", "magnification", "backend", "max_batch", "class_names", "versions", "limits", "outputs")
    class VersionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    TILE_SIZE_FIELD_NUMBER: _ClassVar[int]
    OVERLAP_FIELD_NUMBER: _ClassVar[int]
    TARGET_MPP_FIELD_NUMBER: _ClassVar[int]
    MPP_TOLERANCE_FIELD_NUMBER: _ClassVar[int]
    MAGNIFICATION_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAMES_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    model: str
    precision: str
    tile_size: int
    overlap: int
    target_mpp: float
    mpp_tolerance: float
    magnification: float
    backend: str
    max_batch: int
    class_names: _containers.RepeatedScalarFieldContainer[str]
    versions: _containers.ScalarMap[str, str]
    limits: Limits
    outputs: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model: _Optional[str] = ..., precision: _Optional[str] = ..., tile_size: _Optional[int] = ..., overlap: _Optional[int] = ..., target_mpp: _Optional[float] = ..., mpp_tolerance: _Optional[float] = ..., magnification: _Optional[float] = ..., backend: _Optional[str] = ..., max_batch: _Optional[int] = ..., class_names: _Optional[_Iterable[str]] = ..., versions: _Optional[_Mapping[str, str]] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., outputs: _Optional[_Iterable[str]] = ...) -> None: ...

class Limits(_message.Message):
    __slots__ = ("max_slides", "max_tile_pixels", "max_message_bytes", "max_slide_side", "max_keep_seconds", "tiles_in_memory_per_slide", "max_open_rows")
    MAX_SLIDES_FIELD_NUMBER: _ClassVar[int]
    MAX_TILE_PIXELS_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_SLIDE_SIDE_FIELD_NUMBER: _ClassVar[int]
    MAX_KEEP_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TILES_IN_MEMORY_PER_SLIDE_FIELD_NUMBER: _ClassVar[int]
    MAX_OPEN_ROWS_FIELD_NUMBER: _ClassVar[int]
    max_slides: int
    max_tile_pixels: int
    max_message_bytes: int
    max_slide_side: int
    max_keep_seconds: int
    tiles_in_memory_per_slide: int
    max_open_rows: int
    def __init__(self, max_slides: _Optional[int] = ..., max_tile_pixels: _Optional[int] = ..., max_message_bytes: _Optional[int] = ..., max_slide_side: _Optional[int] = ..., max_keep_seconds: _Optional[int] = ..., tiles_in_memory_per_slide: _Optional[int] = ..., max_open_rows: _Optional[int] = ...) -> None: ...

class SlideRequest(_message.Message):
    __slots__ = ("open", "tile", "close")
    OPEN_FIELD_NUMBER: _ClassVar[int]
    TILE_FIELD_NUMBER: _ClassVar[int]
    CLOSE_FIELD_NUMBER: _ClassVar[int]
    open: OpenSlide
    tile: Tile
    close: CloseSlide
    def __init__(self, open: _Optional[_Union[OpenSlide, _Mapping]] = ..., tile: _Optional[_Union[Tile, _Mapping]] = ..., close: _Optional[_Union[CloseSlide, _Mapping]] = ...) -> None: ...

class OpenSlide(_message.Message):
    __slots__ = ("slide_id", "width", "height", "mpp", "layout", "outputs", "resume", "last_seq", "overwrite", "keep_seconds")
    SLIDE_ID_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    MPP_FIELD_NUMBER: _ClassVar[int]
    LAYOUT_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    RESUME_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    OVERWRITE_FIELD_NUMBER: _ClassVar[int]
    KEEP_SECONDS_FIELD_NUMBER: _ClassVar[int]
    slide_id: str
    width: int
    height: int
    mpp: float
    layout: TileLayout
    outputs: _containers.RepeatedScalarFieldContainer[str]
    resume: bool
    last_seq: int
    overwrite: bool
    keep_seconds: int
    def __init__(self, slide_id: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., mpp: _Optional[float] = ..., layout: _Optional[_Union[TileLayout, _Mapping]] = ..., outputs: _Optional[_Iterable[str]] = ..., resume: _Optional[bool] = ..., last_seq: _Optional[int] = ..., overwrite: _Optional[bool] = ..., keep_seconds: _Optional[int] = ...) -> None: ...

class TileLayout(_message.Message):
    __slots__ = ("tile_width", "tile_height", "stride_x", "stride_y")
    TILE_WIDTH_FIELD_NUMBER: _ClassVar[int]
    TILE_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    STRIDE_X_FIELD_NUMBER: _ClassVar[int]
    STRIDE_Y_FIELD_NUMBER: _ClassVar[int]
    tile_width: int
    tile_height: int
    stride_x: int
    stride_y: int
    def __init__(self, tile_width: _Optional[int] = ..., tile_height: _Optional[int] = ..., stride_x: _Optional[int] = ..., stride_y: _Optional[int] = ...) -> None: ...

class Tile(_message.Message):
    __slots__ = ("x", "y", "width", "height", "rgb", "jpeg")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    RGB_FIELD_NUMBER: _ClassVar[int]
    JPEG_FIELD_NUMBER: _ClassVar[int]
    x: int
    y: int
    width: int
    height: int
    rgb: bytes
    jpeg: bytes
    def __init__(self, x: _Optional[int] = ..., y: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., rgb: _Optional[bytes] = ..., jpeg: _Optional[bytes] = ...) -> None: ...

class CloseSlide(_message.Message):
    __slots__ = ("discard",)
    DISCARD_FIELD_NUMBER: _ClassVar[int]
    discard: bool
    def __init__(self, discard: _Optional[bool] = ...) -> None: ...

class SlideResponse(_message.Message):
    __slots__ = ("seq", "opened", "cells", "result")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    OPENED_FIELD_NUMBER: _ClassVar[int]
    CELLS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    seq: int
    opened: SlideOpened
    cells: TileCells
    result: SlideResult
    def __init__(self, seq: _Optional[int] = ..., opened: _Optional[_Union[SlideOpened, _Mapping]] = ..., cells: _Optional[_Union[TileCells, _Mapping]] = ..., result: _Optional[_Union[SlideResult, _Mapping]] = ...) -> None: ...

class SlideOpened(_message.Message):
    __slots__ = ("slide_id", "output_name", "grid_rows", "grid_cols", "tile_size", "overlap", "resumed", "received", "replay_complete")
    SLIDE_ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_NAME_FIELD_NUMBER: _ClassVar[int]
    GRID_ROWS_FIELD_NUMBER: _ClassVar[int]
    GRID_COLS_FIELD_NUMBER: _ClassVar[int]
    TILE_SIZE_FIELD_NUMBER: _ClassVar[int]
    OVERLAP_FIELD_NUMBER: _ClassVar[int]
    RESUMED_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    REPLAY_COMPLETE_FIELD_NUMBER: _ClassVar[int]
    slide_id: str
    output_name: str
    grid_rows: int
    grid_cols: int
    tile_size: int
    overlap: int
    resumed: bool
    received: _containers.RepeatedCompositeFieldContainer[TilePosition]
    replay_complete: bool
    def __init__(self, slide_id: _Optional[str] = ..., output_name: _Optional[str] = ..., grid_rows: _Optional[int] = ..., grid_cols: _Optional[int] = ..., tile_size: _Optional[int] = ..., overlap: _Optional[int] = ..., resumed: _Optional[bool] = ..., received: _Optional[_Iterable[_Union[TilePosition, _Mapping]]] = ..., replay_complete: _Optional[bool] = ...) -> None: ...

class TilePosition(_message.Message):
    __slots__ = ("x", "y")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    x: int
    y: int
    def __init__(self, x: _Optional[int] = ..., y: _Optional[int] = ...) -> None: ...

class GridTile(_message.Message):
    __slots__ = ("row", "col", "x", "y", "width", "height")
    ROW_FIELD_NUMBER: _ClassVar[int]
    COL_FIELD_NUMBER: _ClassVar[int]
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    row: int
    col: int
    x: int
    y: int
    width: int
    height: int
    def __init__(self, row: _Optional[int] = ..., col: _Optional[int] = ..., x: _Optional[int] = ..., y: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ...) -> None: ...

class TileCells(_message.Message):
    __slots__ = ("tile", "cells", "tiles_done")
    TILE_FIELD_NUMBER: _ClassVar[int]
    CELLS_FIELD_NUMBER: _ClassVar[int]
    TILES_DONE_FIELD_NUMBER: _ClassVar[int]
    tile: GridTile
    cells: _containers.RepeatedCompositeFieldContainer[Cell]
    tiles_done: int
    def __init__(self, tile: _Optional[_Union[GridTile, _Mapping]] = ..., cells: _Optional[_Iterable[_Union[Cell, _Mapping]]] = ..., tiles_done: _Optional[int] = ...) -> None: ...

class Cell(_message.Message):
    __slots__ = ("cell_id", "bbox", "centroid", "contour", "type_prob", "type", "type_name", "patch_coordinates", "cell_status", "offset_global", "edge_position", "edge_information")
    CELL_ID_FIELD_NUMBER: _ClassVar[int]
    BBOX_FIELD_NUMBER: _ClassVar[int]
    CENTROID_FIELD_NUMBER: _ClassVar[int]
    CONTOUR_FIELD_NUMBER: _ClassVar[int]
    TYPE_PROB_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    TYPE_NAME_FIELD_NUMBER: _ClassVar[int]
    PATCH_COORDINATES_FIELD_NUMBER: _ClassVar[int]
    CELL_STATUS_FIELD_NUMBER: _ClassVar[int]
    OFFSET_GLOBAL_FIELD_NUMBER: _ClassVar[int]
    EDGE_POSITION_FIELD_NUMBER: _ClassVar[int]
    EDGE_INFORMATION_FIELD_NUMBER: _ClassVar[int]
    cell_id: int
    bbox: _containers.RepeatedScalarFieldContainer[float]
    centroid: _containers.RepeatedScalarFieldContainer[float]
    contour: _containers.RepeatedScalarFieldContainer[float]
    type_prob: float
    type: int
    type_name: str
    patch_coordinates: _containers.RepeatedScalarFieldContainer[int]
    cell_status: int
    offset_global: _containers.RepeatedScalarFieldContainer[int]
    edge_position: bool
    edge_information: EdgeInformation
    def __init__(self, cell_id: _Optional[int] = ..., bbox: _Optional[_Iterable[float]] = ..., centroid: _Optional[_Iterable[float]] = ..., contour: _Optional[_Iterable[float]] = ..., type_prob: _Optional[float] = ..., type: _Optional[int] = ..., type_name: _Optional[str] = ..., patch_coordinates: _Optional[_Iterable[int]] = ..., cell_status: _Optional[int] = ..., offset_global: _Optional[_Iterable[int]] = ..., edge_position: _Optional[bool] = ..., edge_information: _Optional[_Union[EdgeInformation, _Mapping]] = ...) -> None: ...

class EdgeInformation(_message.Message):
    __slots__ = ("position", "edge_patches")
    POSITION_FIELD_NUMBER: _ClassVar[int]
    EDGE_PATCHES_FIELD_NUMBER: _ClassVar[int]
    position: _containers.RepeatedScalarFieldContainer[int]
    edge_patches: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, position: _Optional[_Iterable[int]] = ..., edge_patches: _Optional[_Iterable[int]] = ...) -> None: ...

class SlideResult(_message.Message):
    __slots__ = ("slide_id", "output_dir", "cells_total", "counts", "outputs", "timings", "tiles_processed", "tiles_received", "tissue", "tissue_probability")
    SLIDE_ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_DIR_FIELD_NUMBER: _ClassVar[int]
    CELLS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    TILES_PROCESSED_FIELD_NUMBER: _ClassVar[int]
    TILES_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    TISSUE_FIELD_NUMBER: _ClassVar[int]
    TISSUE_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    slide_id: str
    output_dir: str
    cells_total: int
    counts: _containers.RepeatedCompositeFieldContainer[ClassCount]
    outputs: _containers.RepeatedScalarFieldContainer[str]
    timings: Timings
    tiles_processed: int
    tiles_received: int
    tissue: str
    tissue_probability: float
    def __init__(self, slide_id: _Optional[str] = ..., output_dir: _Optional[str] = ..., cells_total: _Optional[int] = ..., counts: _Optional[_Iterable[_Union[ClassCount, _Mapping]]] = ..., outputs: _Optional[_Iterable[str]] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ..., tiles_processed: _Optional[int] = ..., tiles_received: _Optional[int] = ..., tissue: _Optional[str] = ..., tissue_probability: _Optional[float] = ...) -> None: ...

class ClassCount(_message.Message):
    __slots__ = ("type", "name", "count")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    type: int
    name: str
    count: int
    def __init__(self, type: _Optional[int] = ..., name: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class Timings(_message.Message):
    __slots__ = ("open_to_close_s", "close_to_result_s", "total_s", "tiles_per_s", "backend_wait_fraction")
    OPEN_TO_CLOSE_S_FIELD_NUMBER: _ClassVar[int]
    CLOSE_TO_RESULT_S_FIELD_NUMBER: _ClassVar[int]
    TOTAL_S_FIELD_NUMBER: _ClassVar[int]
    TILES_PER_S_FIELD_NUMBER: _ClassVar[int]
    BACKEND_WAIT_FRACTION_FIELD_NUMBER: _ClassVar[int]
    open_to_close_s: float
    close_to_result_s: float
    total_s: float
    tiles_per_s: float
    backend_wait_fraction: float
    def __init__(self, open_to_close_s: _Optional[float] = ..., close_to_result_s: _Optional[float] = ..., total_s: _Optional[float] = ..., tiles_per_s: _Optional[float] = ..., backend_wait_fraction: _Optional[float] = ...) -> None: ...
