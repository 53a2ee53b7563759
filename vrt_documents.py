"""VRT documents built here, never taken from user input: a window of one dataset, and the pieces
a mosaic of tiles is made of; plus what a band says about itself (``BandMeta``), kept on every
output path as ``gdal_translate`` keeps it.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.io import DatasetReader
from rasterio.windows import Window


@dataclass(frozen=True)
class BandMeta:
    """What a band says about itself besides its pixels, kept on every output path (as
    ``gdal_translate`` keeps it): description, unit, scale, offset and its own metadata, less
    the ``STATISTICS_*`` items, which describe the source's pixels, not a window's or a warp's."""

    description: str | None = None
    unit: str | None = None
    scale: float = 1.0
    offset: float = 0.0
    tags: tuple[tuple[str, str], ...] = ()


def band_meta(ds: DatasetReader) -> tuple[BandMeta, ...]:
    """Each band's ``BandMeta``."""
    return tuple(BandMeta(ds.descriptions[i] or None, ds.units[i] or None, ds.scales[i], ds.offsets[i],
                          tuple((k, v) for k, v in ds.tags(i + 1).items() if not k.startswith("STATISTICS_")))
                 for i in range(ds.count))


def write_band_meta(dst: Any, meta: Sequence[BandMeta]) -> None:
    """Set ``meta`` on the first bands of a dataset open for writing (a warp may have added an
    alpha band after them)."""
    meta = list(meta)[:dst.count]
    for bidx, band in enumerate(meta, start=1):
        if band.description:
            dst.set_band_description(bidx, band.description)
        if band.unit:
            dst.set_band_unit(bidx, band.unit)
        if band.tags:
            dst.update_tags(bidx, **dict(band.tags))
    extra = dst.count - len(meta)
    dst.scales = [b.scale for b in meta] + [1.0] * extra
    dst.offsets = [b.offset for b in meta] + [0.0] * extra


def _band_meta_xml(meta: BandMeta | None) -> str:
    if meta is None:
        return ""
    parts = [f"<Description>{escape(meta.description)}</Description>" if meta.description else "",
             f"<UnitType>{escape(meta.unit)}</UnitType>" if meta.unit else "",
             f"<Offset>{meta.offset!r}</Offset>" if meta.offset != 0.0 else "",
             f"<Scale>{meta.scale!r}</Scale>" if meta.scale != 1.0 else "", _metadata_xml(dict(meta.tags))]
    return "".join(parts)


def band_xml(bidx: int, dtype: str, nodata: float | None, color: ColorInterp,
             sources: list[tuple[str, int | str, Window, Window]], meta: BandMeta | None = None, *,
             relative: bool = False) -> str:
    """A ``VRTRasterBand`` of simple sources ``(path, band, source window, destination window)``;
    with ``relative`` the paths are relative to the VRT's own directory."""
    gdal_type = _GDAL_TYPES[dtype]
    parts = [f'<VRTRasterBand dataType="{gdal_type}" band="{bidx}">', _band_meta_xml(meta)]
    if nodata is not None:
        parts.append(f"<NoDataValue>{_nodata_text(nodata)}</NoDataValue>")
    parts.append(f"<ColorInterp>{color.name.capitalize()}</ColorInterp>")
    for path, source_band, src_win, dst_win in sources:
        parts.append(
            f'<SimpleSource><SourceFilename relativeToVRT="{int(relative)}">{escape(path)}</SourceFilename>'
            f"<SourceBand>{source_band}</SourceBand>{_rect('SrcRect', src_win)}"
            f"{_rect('DstRect', dst_win)}</SimpleSource>")
    parts.append("</VRTRasterBand>")
    return "".join(parts)


_GDAL_TYPES = {"uint8": "Byte", "int8": "Int8", "uint16": "UInt16", "int16": "Int16",
               "uint32": "UInt32", "int32": "Int32", "uint64": "UInt64", "int64": "Int64",
               "float32": "Float32", "float64": "Float64", "complex_int16": "CInt16",
               "complex64": "CFloat32", "complex128": "CFloat64"}


def _nodata_text(value: float) -> str:
    return "nan" if math.isnan(value) else repr(float(value))


def _rect(tag: str, w: Window) -> str:
    return (f'<{tag} xOff="{int(w.col_off)}" yOff="{int(w.row_off)}" '
            f'xSize="{int(w.width)}" ySize="{int(w.height)}"/>')


def _metadata_xml(tags: Mapping[str, str]) -> str:
    items = "".join(f'<MDI key="{escape(k, {chr(34): "&quot;"})}">{escape(v)}</MDI>' for k, v in tags.items())
    return f"<Metadata>{items}</Metadata>" if items else ""


def vrt_xml(width: int, height: int, crs: CRS, transform: Affine, bands: list[str],
             mask: str | None, tags: Mapping[str, str] | None = None) -> str:
    gt = ",".join(repr(v) for v in transform.to_gdal())
    head = (f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">'
            f"<SRS>{escape(crs.to_wkt())}</SRS><GeoTransform>{gt}</GeoTransform>"
            f"{_metadata_xml(tags or {})}")
    mask_xml = f"<MaskBand>{mask}</MaskBand>" if mask else ""
    return head + "".join(bands) + mask_xml + "</VRTDataset>"


def has_dataset_mask(ds: DatasetReader) -> bool:
    flags = ds.mask_flag_enums[0]
    return MaskFlags.per_dataset in flags and MaskFlags.alpha not in flags


def window_vrt(ds: DatasetReader, window: Window, nodata: float | None = None) -> str:
    """VRT XML exposing ``window`` of ``ds`` as a dataset (bands with their ``BandMeta``, nodata,
    alpha, internal mask, and the source's metadata, its datetime among them)."""
    width, height = int(window.width), int(window.height)
    dst_win = Window(0, 0, width, height)
    nodata = ds.nodata if nodata is None else nodata
    meta = band_meta(ds)
    bands = [band_xml(b, ds.dtypes[b - 1], nodata, ds.colorinterp[b - 1],
                      [(ds.name, b, window, dst_win)], meta[b - 1]) for b in ds.indexes]
    mask = None
    if has_dataset_mask(ds):
        mask = band_xml(1, "uint8", None, ColorInterp.undefined,
                        [(ds.name, "mask,1", window, dst_win)])
    return vrt_xml(width, height, ds.crs, ds.window_transform(window), bands, mask, ds.tags())
