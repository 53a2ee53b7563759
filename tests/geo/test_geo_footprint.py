"""The footprint of a raster contains every valid pixel: checked against a dense reference, every
pixel's corners and centre transformed to longitude/latitude (the ones that map to the globe), for
the grids whose footprint is not a plain ring: geostationary disks, polar grids, grids across the
antimeridian, south-up grids."""
from __future__ import annotations

import numpy as np
import pyproj
import pytest
import rasterio
import shapely
from affine import Affine
from rasterio.transform import from_bounds

import geo_ops

GEOS_EAST = "+proj=geos +lon_0=-75 +h=35786023 +x_0=0 +y_0=0 +ellps=GRS80 +units=m +no_defs"
GEOS_PACIFIC = "+proj=geos +lon_0=140.7 +h=35785863 +x_0=0 +y_0=0 +ellps=WGS84 +units=m +no_defs"
#: Half the side of a geostationary full-disk grid (metres of the scanning angle): the disk's limb
#: is at ~5.43e6, so the corners lie off the globe.
DISK = 5_500_000.0


def write_grid(path, crs, transform, width, height):
    """A one-band byte raster on the given grid (its pixels are never read by a footprint)."""
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=1, dtype="uint8",
                       crs=crs, transform=transform, tiled=True, blockxsize=256, blockysize=256) as dst:
        dst.write(np.ones((1, height, width), dtype="uint8"))
    return path


def reference_transformer(crs, lonlat_crs):
    """``(x, y) -> (lon, lat)`` from a projected CRS to a geographic one, axis order handled here
    (PROJ's always_xy does not reorder the IAU's planetocentric CRSs)."""
    source = pyproj.CRS.from_wkt(crs.to_wkt())
    if lonlat_crs is None:
        return pyproj.Transformer.from_crs(source, "EPSG:4326", always_xy=True).transform
    target = pyproj.CRS.from_user_input(lonlat_crs)
    transformer = pyproj.Transformer.from_crs(source, target)
    lat_first = target.axis_info[0].direction.lower() == "north"

    def transform(x, y, errcheck=False):
        a, b = transformer.transform(x, y, errcheck=errcheck)
        return (b, a) if lat_first else (a, b)
    return transform


def dense_reference(crs, transform, width, height, lonlat_crs=None):
    """Every pixel's corners and centre that map to the globe, as lon/lat (EPSG:4326, or
    ``lonlat_crs`` for a grid of another body), and per point the distance in degrees that half a
    pixel covers there (the tolerance of the comparison)."""
    to_lonlat = type("T", (), {"transform": staticmethod(reference_transformer(crs, lonlat_crs))})
    corners = np.meshgrid(np.arange(width + 1, dtype=float), np.arange(height + 1, dtype=float))
    centres = np.meshgrid(np.arange(width, dtype=float) + 0.5, np.arange(height, dtype=float) + 0.5)
    cols = np.concatenate([corners[0].ravel(), centres[0].ravel()])
    rows = np.concatenate([corners[1].ravel(), centres[1].ravel()])

    def lonlat(c, r):
        a, b, xoff, d, e, yoff = transform[:6]
        return to_lonlat.transform(a * c + b * r + xoff, d * c + e * r + yoff, errcheck=False)

    lons, lats = (np.asarray(v) for v in lonlat(cols, rows))
    lons = np.where(lons > 180.0, lons - 360.0, np.where(lons < -180.0, lons + 360.0, lons))  # lon/lat grids past ±180
    ok = np.isfinite(lons) & np.isfinite(lats)
    steps = []
    for dc, dr in ((0.5, 0), (-0.5, 0), (0, 0.5), (0, -0.5)):
        nl, nt = (np.asarray(v) for v in lonlat(cols + dc, rows + dr))
        dlon = (nl - lons + 180.0) % 360.0 - 180.0
        steps.append(np.where(np.isfinite(nl) & np.isfinite(nt), np.hypot(dlon, nt - lats), 0.0))
    tolerance = np.max(steps, axis=0)
    return lons[ok], lats[ok], tolerance[ok]


def outside(header, lons, lats, tolerance):
    """Reference points farther than their half pixel from the footprint, and from the bbox."""
    geometry = shapely.geometry.shape(header.footprint)
    far = shapely.distance(geometry, shapely.points(lons, lats)) > tolerance + 1e-9
    west, south, east, north = header.bbox
    in_lon = ((lons >= west - tolerance) & (lons <= east + tolerance) if west <= east
              else (lons >= west - tolerance) | (lons <= east + tolerance))
    off_bbox = ~in_lon | (lats < south - tolerance) | (lats > north + tolerance)
    return int(far.sum()), int(off_bbox.sum())


def check(path, lonlat_crs=None):
    header = geo_ops.read_header(path)
    with rasterio.open(path) as ds:
        lons, lats, tolerance = dense_reference(ds.crs, ds.transform, ds.width, ds.height, lonlat_crs)
    assert lons.size > 0
    far, off_bbox = outside(header, lons, lats, tolerance)
    assert (far, off_bbox) == (0, 0), (f"{far} of {lons.size} pixel positions outside the footprint, "
                                       f"{off_bbox} outside the bbox {header.bbox}")
    return header


def test_goes_footprint_contains_the_whole_disk(shared_rasters):
    header = check(shared_rasters / "goes.tif")
    west, south, east, north = header.bbox
    assert south < -80 and north > 80, header.bbox  # the limb, not a sampled grid inside it


@pytest.mark.parametrize("crs", [GEOS_EAST, GEOS_PACIFIC], ids=["lon-75", "lon140.7-antimeridian"])
def test_a_synthetic_full_disk_is_contained(tmp_path, crs):
    header = check(write_grid(tmp_path / "disk.tif", crs, from_bounds(-DISK, -DISK, DISK, DISK, 300, 300), 300, 300))
    assert header.footprint["type"] in ("Polygon", "MultiPolygon")


@pytest.mark.parametrize(("crs", "bounds"), [
    ("EPSG:3413", (-1_000_000.0, -1_000_000.0, 1_000_000.0, 1_000_000.0)),  # holds the North Pole
    ("EPSG:3031", (-2_500_000.0, -500_000.0, 1_500_000.0, 500_000.0)),  # holds the South Pole, off-centre
    ("EPSG:3413", (500_000.0, 500_000.0, 2_500_000.0, 2_500_000.0)),  # near the pole, without it
], ids=["north-pole", "south-pole-off-centre", "polar-without-pole"])
def test_polar_grids_are_contained(tmp_path, crs, bounds):
    check(write_grid(tmp_path / "polar.tif", crs, from_bounds(*bounds, 300, 300), 300, 300))


@pytest.mark.parametrize(("crs", "bounds"), [
    ("EPSG:32660", (300_000.0, 0.0, 900_000.0, 1_000_000.0)),
    ("EPSG:4326", (170.0, -10.0, 190.0, 10.0)),
    ("EPSG:3832", (2_000_000.0, -2_000_000.0, 4_500_000.0, 1_000_000.0)),  # PDC Mercator, lon_0 150
], ids=["utm60", "lonlat-170-190", "pacific-mercator"])
def test_antimeridian_grids_are_contained(tmp_path, crs, bounds):
    header = check(write_grid(tmp_path / "am.tif", crs, from_bounds(*bounds, 300, 300), 300, 300))
    west, _, east, _ = header.bbox
    assert west > east, header.bbox


@pytest.mark.parametrize(("crs", "bounds"), [
    ("EPSG:32633", (300_000.0, 5_000_000.0, 400_000.0, 5_100_000.0)),
    ("EPSG:32660", (300_000.0, 0.0, 900_000.0, 1_000_000.0)),
    ("EPSG:3031", (-500_000.0, -500_000.0, 500_000.0, 500_000.0)),
], ids=["utm33", "utm60-antimeridian", "south-pole"])
def test_south_up_grids_are_contained_and_counter_clockwise(tmp_path, crs, bounds):
    west, south, east, north = bounds
    transform = Affine((east - west) / 300, 0.0, west, 0.0, (north - south) / 300, south)  # row 0 is the south
    header = check(write_grid(tmp_path / "south-up.tif", crs, transform, 300, 300))
    polygons = header.footprint["coordinates"] if header.footprint["type"] == "MultiPolygon" else [header.footprint["coordinates"]]
    for polygon in polygons:
        assert shapely.is_ccw(shapely.LinearRing(polygon[0])), polygon[0][:4]


@pytest.mark.parametrize("wkt", [
    'LOCAL_CS["bogus",UNIT["metre",1]]',
    'ENGCRS["bogus",EDATUM["x"],CS[Cartesian,2],AXIS["x",east],AXIS["y",north],LENGTHUNIT["metre",1]]',
], ids=["local-cs", "engineering-crs"])
def test_a_crs_with_no_place_on_the_earth_has_no_footprint(wkt):
    """PROJ has no way from an engineering or local CRS to lon/lat: the footprint of any grid in
    it is (None, None) (cataloging it is FootprintError), not PROJ's ProjError escaping raw to
    the callers that ask footprint() directly (mosaics, cube items)."""
    crs = rasterio.crs.CRS.from_wkt(wkt)
    assert not geo_ops.maps_to_lonlat(crs.to_wkt()) and geo_ops.maps_to_lonlat(rasterio.crs.CRS.from_epsg(32633).to_wkt())
    assert geo_ops.footprint(crs, from_bounds(0, 0, 100, 100, 64, 64), 64, 64) == (None, None)


EUROPA_ESRI = ('PROJCS["Equirectangular EUROPA",GEOGCS["GCS_EUROPA",DATUM["D_EUROPA",SPHEROID["EUROPA_localRadius",'
               '1560800,0]],PRIMEM["Reference_Meridian",0],UNIT["degree",0.0174532925199433]],'
               'PROJECTION["Equirectangular"],PARAMETER["standard_parallel_1",0],PARAMETER["central_meridian",180],'
               'PARAMETER["false_easting",0],PARAMETER["false_northing",0],UNIT["metre",1]]')


@pytest.mark.parametrize(("crs", "bounds", "reference", "body"), [
    ("IAU_2015:49910", (-300_000.0, 1_000_000.0, 300_000.0, 1_600_000.0), "IAU_2015:49900", "Mars"),
    ("IAU_2015:49915", (-300_000.0, -300_000.0, 300_000.0, 300_000.0), "IAU_2015:49900", "Mars"),  # across 180
    ("IAU_2015:49911", (-3_000_000.0, 2_000_000.0, 3_000_000.0, 3_300_000.0), "IAU_2015:49902", "Mars"),  # ellipsoid
    ("IAU_2015:49930", (-500_000.0, -500_000.0, 500_000.0, 500_000.0), "IAU_2015:49900", "Mars"),  # North Pole
    ("IAU_2015:30165", (-1_800_000.0, -1_800_000.0, 1_800_000.0, 1_800_000.0), "IAU_2015:30100", "Moon"),  # full disk
    (EUROPA_ESRI, (-1_379_262.0, 380_982.0, -1_119_540.0, 630_270.0), "IAU_2015:50200", "Europa"),
], ids=["mars-equirect", "mars-antimeridian", "mars-ellipsoid-planetocentric", "mars-north-pole",
        "moon-orthographic-disk", "europa-esri-wkt"])
def test_grids_of_other_bodies_are_contained_in_their_lonlat(tmp_path, crs, bounds, reference, body):
    """A raster of Mars, the Moon or Europa has a footprint in that body's planetocentric
    longitude/latitude (PROJ has no way to the Earth's): checked against the IAU's own
    planetocentric CRS of the body, every pixel's corners and centre."""
    crs = rasterio.crs.CRS.from_user_input(crs) if ":" in crs and not crs.startswith("PROJCS") else rasterio.crs.CRS.from_wkt(crs)
    header = check(write_grid(tmp_path / "body.tif", crs, from_bounds(*bounds, 200, 200), 200, 200), reference)
    assert header.body == body and header.gsd is not None


@pytest.mark.parametrize(("crs", "transform"), [
    ("EPSG:32633", Affine(8.660254, -5.0, 500_000.0, -5.0, -8.660254, 5_000_000.0)),  # rotated 30 degrees
    ("EPSG:32633", Affine(10.0, 4.0, 500_000.0, 0.0, -10.0, 5_000_000.0)),  # sheared
    ("EPSG:4326", Affine(0.01, 0.004, 170.0, 0.003, -0.01, 10.0)),  # rotated lon/lat across the antimeridian
    ("EPSG:3413", Affine(5_000.0, 2_000.0, -600_000.0, 2_000.0, -5_000.0, 600_000.0)),  # rotated around the pole
], ids=["rotated-utm", "sheared-utm", "rotated-lonlat-antimeridian", "rotated-polar"])
def test_rotated_and_sheared_grids_are_contained(tmp_path, crs, transform):
    check(write_grid(tmp_path / "rotated.tif", crs, transform, 250, 200))


def test_a_gcp_raster_as_it_lies_is_contained(tmp_path):
    """A raster placed by GCPs (cataloged in place, not warped) has the footprint of its GCPs'
    transformation: every pixel's corners and centre, mapped by GDAL's GCP transformer (the
    polynomial gdalwarp would fit), lie in it."""
    import sys

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    import raster_factory
    from rasterio.transform import GCPTransformer

    path = raster_factory.write_gcp_raster(tmp_path / "gcp.tif", width=240, height=180, grid=5, curve=0.3)
    header = geo_ops.read_header(path)
    with rasterio.open(path) as ds:
        transformer = GCPTransformer(ds.gcps[0])
    corners = np.meshgrid(np.arange(241, dtype=float), np.arange(181, dtype=float))
    centres = np.meshgrid(np.arange(240, dtype=float) + 0.5, np.arange(180, dtype=float) + 0.5)
    cols = np.concatenate([corners[0].ravel(), centres[0].ravel()])
    rows = np.concatenate([corners[1].ravel(), centres[1].ravel()])
    lons, lats = (np.asarray(v) for v in transformer.xy(rows, cols, offset="ul"))
    tolerance = np.full(lons.shape, 0.5 * 0.8 / 240)  # half a pixel, in degrees
    assert header.georeferencing == "gcps" and header.placement["RMH_GCP_TRANSFORM"] == "polynomial-2"
    assert outside(header, lons, lats, tolerance) == (0, 0)


def test_a_geostationary_image_across_the_antimeridian_is_contained(tmp_path):
    """rio-cogeo's image_geos.tif's grid (900 x 1100 pixels of 10 km at 140.7 E): across the
    antimeridian, its corners off the globe; near the limb one pixel spans degrees of longitude,
    and the footprint holds every pixel position to half of its own pixel."""
    transform = Affine(10_001.11, 0.0, -4_500_500.0, 0.0, -10_000.0, 5_500_000.0)
    header = check(write_grid(tmp_path / "geos.tif", GEOS_PACIFIC, transform, 900, 1100))
    west, _, east, _ = header.bbox
    assert west > east, header.bbox
