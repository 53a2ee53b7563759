"""``validate``: a raster judged without trusting it (format, header, limits, a sample of blocks,
COG layout), composed from ``raster_checks``; ``validated`` keeps the dataset open for the
caller; ``preflight`` opens a source after the header-only checks.
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping

from rasterio.io import DatasetReader

from raster_checks import (issue, all_valid, check_blocks, check_cog_layout, check_dtypes, check_georeferencing,
                           check_nodata, check_size, decompressed_bytes)
from raster_crs import crs_epsg
from raster_env import GDAL_ERRORS, PathLike, file_size, env_options, gdal_env, nodata_json, read_error
from raster_errors import ERRORS_BY_CODE, GeoOpsError, SourceUnavailable, UnreadableRaster
from raster_models import Issue, RasterLimits, ValidationReport
from raster_open import open_allowed, open_raster
from raster_stats import valid_fraction

log = logging.getLogger(__name__)


def validate(
    src: PathLike,
    *,
    limits: RasterLimits | None = None,
    sample_blocks: int = 16,
    check_cog: bool = True,
    gdal_config: Mapping[str, str] | None = None,
    head: Callable[[], bytes] | None = None,
) -> ValidationReport:
    """Validate a raster without trusting it: format, header, limits, a sample of blocks, COG layout.

    Format and size checks run on the header alone; blocks are only decoded when those pass, so
    a VRT, a text file or a decompression bomb is refused without reading any pixel.
    """
    with validated(src, limits=limits, sample_blocks=sample_blocks, gdal_config=gdal_config,
                   head=head) as (report, _ds):
        pass
    if check_cog and not report.errors and report.driver:
        with gdal_env(gdal_config):
            report.is_cog, report.cog_errors, report.cog_warnings = check_cog_layout(
                src, report.driver, env_options(gdal_config))
    report.valid = not report.errors
    log.debug("validated %s: %d errors, %d warnings", src, len(report.errors), len(report.warnings))
    return report


@contextlib.contextmanager
def validated(
    src: PathLike,
    *,
    limits: RasterLimits | None = None,
    sample_blocks: int = 16,
    gdal_config: Mapping[str, str] | None = None,
    head: Callable[[], bytes] | None = None,
) -> Iterator[tuple[ValidationReport, DatasetReader | None]]:
    """``validate`` without the COG layout check that keeps the dataset open for the caller:
    ``(report, dataset)``, the dataset None when validation found an error. One open serves
    validating and reading (each open of a remote file costs requests). ``head`` fetches a
    remote file's leading bytes, only to explain a refusal (see ``open_allowed``)."""
    limits = limits or RasterLimits()
    report = ValidationReport(path=str(src), valid=False, file_bytes=file_size(src))
    with gdal_env(gdal_config):
        try:
            ds = open_allowed(src, head)
            report.driver = ds.driver
        except GeoOpsError as err:
            report.errors.append(issue(type(err), err.reason))
            yield report, None
            return
        with ds:
            try:
                _validate_dataset(ds, report, limits, sample_blocks)
            except GeoOpsError as err:
                report.errors.append(issue(type(err), err.reason))
            report.valid = not report.errors
            yield report, (ds if report.valid else None)


def _validate_dataset(ds: DatasetReader, report: ValidationReport, limits: RasterLimits,
                      sample_blocks: int) -> None:
    report.width, report.height, report.count = ds.width, ds.height, ds.count
    report.dtypes = list(ds.dtypes)
    report.nodata = nodata_json(ds.nodata)
    report.crs_wkt = ds.crs.to_wkt() if ds.crs else None
    report.epsg = crs_epsg(ds.crs)
    report.decompressed_bytes = decompressed_bytes(ds)
    for check in (check_size(ds, limits, report.file_bytes), check_dtypes(ds, limits),
                  check_georeferencing(ds), check_nodata(ds)):
        report.errors.extend(check[0])
        report.warnings.extend(check[1])
    if any(e.code in ("RasterTooLarge", "UnsupportedDtype") for e in report.errors):
        return  # never decode pixels of a file that fails the size guard
    sample = check_blocks(ds, sample_blocks)
    report.blocks_sampled = sample.blocks
    report.pixels = sample.data
    report.errors.extend(sample.errors)
    report.warnings.extend(sample.warnings)
    if sample.errors:
        return
    try:  # a raster read whole, or without invalid pixels, needs no second look at its mask
        fraction = (sample.valid_pixels / max(sample.pixels, 1) if sample.whole or all_valid(ds)
                    else valid_fraction(ds))
    except GDAL_ERRORS as err:
        problem = read_error(ds.name, "reading the overview/decimated mask failed", err)
        if isinstance(problem, SourceUnavailable):
            raise problem from err
        report.errors.append(issue(UnreadableRaster, problem.reason))
        return
    if fraction is None:  # large and without overviews: the sampled blocks speak for it
        fraction = sample.valid_pixels / max(sample.pixels, 1)
    report.valid_fraction = fraction
    report.is_empty = fraction == 0.0
    if report.is_empty:
        report.warnings.append(issue("EmptyRaster", "every sampled pixel is nodata/masked"))


def preflight(src: PathLike, limits: RasterLimits | None = None) -> DatasetReader:
    """Open ``src`` after the header-only checks; raises the first blocking error.

    Must be called inside a ``rasterio.Env``. Georeferencing is required, since outputs are maps.
    """
    limits = limits or RasterLimits()
    ds = open_raster(src)
    errors: list[Issue] = []
    for check in (check_size(ds, limits, file_size(src)), check_dtypes(ds, limits),
                  check_georeferencing(ds), check_nodata(ds)):
        errors.extend(check[0])
    if errors:
        ds.close()
        raise ERRORS_BY_CODE[errors[0].code](src, errors[0].message)
    return ds
