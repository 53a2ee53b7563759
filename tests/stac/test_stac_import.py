"""STAC made elsewhere, without services: where its hrefs may lead (href_policy), how its documents
are read (a pystac-written static catalog, NDJSON, an ItemCollection, through a reader over a
local directory that records what it was asked for), and how its items are rewritten
(stac_import): the rewritten items validate offline."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import href_policy
import stac_import
from href_policy import BlobLocation, HrefPolicy, UrlLocation
from stac_ops import ALTERNATE_EXT, COG_MEDIA_TYPE, IMPORT_DIGEST, IMPORTED_FROM
from stac_sources import item_dicts, static_catalog

AZURITE = "http://127.0.0.1:10000/devstoreaccount1/"
POLICY = HrefPolicy.of(own_prefixes=[AZURITE, "https://cdn.example.org/files"],
                       allowed_hosts=["data.example.com", "127.0.0.1:8443"],
                       protected_containers=["rmh-system"])
BASE = BlobLocation("vendor", "stac/scenes/scene-0/scene-0.json")


@pytest.mark.parametrize("href, expected", [
    ("./striped.tif", BlobLocation("vendor", "stac/scenes/scene-0/striped.tif")),
    ("striped.tif", BlobLocation("vendor", "stac/scenes/scene-0/striped.tif")),
    ("../scene-1/cog.tif", BlobLocation("vendor", "stac/scenes/scene-1/cog.tif")),
    ("../../../top.tif", BlobLocation("vendor", "top.tif")),
    ("a%20b.tif", BlobLocation("vendor", "stac/scenes/scene-0/a b.tif")),
    ("/vsiaz/other/x/y.tif", BlobLocation("other", "x/y.tif")),
    (AZURITE + "other/x/y%20z.tif", BlobLocation("other", "x/y z.tif")),
    ("https://cdn.example.org/files/cogs/a.tif", BlobLocation("cogs", "a.tif")),
    ("https://data.example.com/a.tif", UrlLocation("https://data.example.com/a.tif")),
    ("https://DATA.example.com:443/a.tif#frag", UrlLocation("https://DATA.example.com:443/a.tif")),
    ("http://127.0.0.1:8443/x.tif", UrlLocation("http://127.0.0.1:8443/x.tif")),
])
def test_hrefs_that_lead_somewhere_the_import_may_read(href, expected):
    assert POLICY.resolve(href, BASE) == expected


@pytest.mark.parametrize("href, error", [
    ("../../../../escape.tif", href_policy.HrefOutsideContainer),
    ("../../../../../etc/passwd", href_policy.HrefOutsideContainer),
    ("%2e%2e/%2e%2e/%2e%2e/%2e%2e/x.tif", href_policy.HrefOutsideContainer),
    ("/etc/passwd", href_policy.LocalPathRefused),
    ("file:///etc/passwd", href_policy.LocalPathRefused),
    ("FILE://localhost/etc/passwd", href_policy.LocalPathRefused),
    ("C:\\data\\x.tif", href_policy.LocalPathRefused),
    ("\\\\server\\share\\x.tif", href_policy.LocalPathRefused),
    ("/vsicurl/http://127.0.0.1:1/x.tif", href_policy.HrefSchemeRefused),
    ("/vsis3/bucket/x.tif", href_policy.HrefSchemeRefused),
    ("s3://bucket/x.tif", href_policy.HrefSchemeRefused),
    ("ftp://data.example.com/x.tif", href_policy.HrefSchemeRefused),
    ("https://evil.example.com/x.tif", href_policy.HostNotAllowed),
    ("https://data.example.com:8443/x.tif", href_policy.HostNotAllowed),  # a bare name allows the default port only
    ("http://127.0.0.1:8444/x.tif", href_policy.HostNotAllowed),
    ("http://169.254.169.254/metadata/instance", href_policy.HostNotAllowed),
    ("https://user:secret@data.example.com/x.tif", href_policy.InvalidHref),
    (AZURITE + "rmh-system/plans/x.json", href_policy.ProtectedContainer),
    ("/vsiaz/rmh-system/x.json", href_policy.ProtectedContainer),
    (AZURITE + "other/../x.tif", href_policy.InvalidHref),
    ("", href_policy.InvalidHref),
])
def test_hrefs_the_import_refuses_by_name(href, error):
    with pytest.raises(error) as raised:
        POLICY.resolve(href, BASE)
    assert raised.value.href == href and repr(href)[:40] in str(raised.value)


def test_relative_hrefs_of_a_fetched_document_stay_on_allowed_hosts():
    remote = UrlLocation("https://data.example.com/catalog/item.json")
    assert POLICY.resolve("./a.tif", remote) == UrlLocation("https://data.example.com/catalog/a.tif")
    with pytest.raises(href_policy.HostNotAllowed):
        POLICY.resolve("//evil.example.com/a.tif", remote)


@pytest.mark.parametrize("entry", ["https://x.org", "x.org/path", "*.x.org", "x.org:0", "x.org:70000", "a b"])
def test_allow_list_entries_are_hosts_only(entry):
    with pytest.raises(ValueError, match="not a host name"):
        href_policy.host_entry(entry)


class DirectoryReader:
    """``SourceReader`` over local directories standing for containers; records every read."""

    def __init__(self, root: Path):
        self.root, self.reads = root, []

    def read(self, location):
        self.reads.append(str(location))
        if isinstance(location, UrlLocation):
            raise stac_import.DocumentUnavailable(f"{location}: this reader fetches nothing")
        path = self.root / location.container / location.name
        if not path.is_file():
            raise stac_import.DocumentUnavailable(f"{location} does not exist")
        return path.read_bytes()

    def lines(self, location):
        self.reads.append(str(location))
        with open(self.root / location.container / location.name, "rb") as handle:
            yield from handle


@pytest.fixture
def vendor(tmp_path) -> DirectoryReader:
    static_catalog(tmp_path / "vendor" / "stac", scenes=2)
    return DirectoryReader(tmp_path)


def test_a_pystac_catalog_is_walked_through_its_links(vendor):
    read = stac_import.read_sources([BlobLocation("vendor", "stac/catalog.json")], vendor, POLICY)
    assert read.failures == []
    assert [i.name for i in read.items] == ["scene-0", "scene-1"]
    assert {i.collection for i in read.items} == {"vendor-scenes"}
    assert read.items[0].base == "vendor/stac/vendor-scenes/scene-0/scene-0.json"
    assert set(read.collections) == {"vendor-scenes"} and read.documents == 4
    # the assets are not documents: the walk never read them
    assert not any(r.endswith((".tif", ".png", "meta.json")) for r in vendor.reads)


def test_a_prefix_reads_every_document_once_without_following_links(vendor, tmp_path):
    names = sorted(p.relative_to(tmp_path / "vendor").as_posix() for p in (tmp_path / "vendor").rglob("*.json"))
    read = stac_import.read_sources([BlobLocation("vendor", n) for n in names], vendor, POLICY,
                                    follow_links=False, strict=False)
    assert sorted(i.name for i in read.items) == ["scene-0", "scene-1"]
    assert read.ignored == ["vendor/stac/vendor-scenes/scene-0/meta.json",
                            "vendor/stac/vendor-scenes/scene-1/meta.json"]
    assert read.failures == [] and set(read.collections) == {"vendor-scenes"}


def test_ndjson_and_item_collections_name_what_they_cannot_read(tmp_path):
    items = item_dicts({"a": {"data": "/vsiaz/vendor/a.tif"}, "b": {"data": "/vsiaz/vendor/b.tif"}})
    (tmp_path / "vendor").mkdir()
    lines = [json.dumps(items[0]), "{not json", "", json.dumps({"type": "Catalog"}), json.dumps(items[1])]
    (tmp_path / "vendor" / "export.ndjson").write_text("\n".join(lines) + "\n")
    (tmp_path / "vendor" / "items.json").write_text(json.dumps({"type": "FeatureCollection", "features": items}))
    reader = DirectoryReader(tmp_path)
    read = stac_import.read_sources([BlobLocation("vendor", "export.ndjson")], reader, POLICY)
    assert [(i.name, i.location) for i in read.items] == [("a", "vendor/export.ndjson, line 1"),
                                                          ("b", "vendor/export.ndjson, line 5")]
    assert [(f.name, f.error) for f in read.failures] == [("vendor/export.ndjson, line 2", "NotStac"),
                                                          ("vendor/export.ndjson, line 4", "NotStac")]
    read = stac_import.read_sources([BlobLocation("vendor", "items.json"), BlobLocation("vendor", "gone.json")],
                                    reader, POLICY)
    assert [i.location for i in read.items] == ["vendor/items.json, feature 0", "vendor/items.json, feature 1"]
    assert [(f.name, f.error) for f in read.failures] == [("vendor/gone.json", "DocumentUnavailable")]


def test_links_out_of_the_container_or_off_the_list_are_failures_and_never_read(tmp_path):
    (tmp_path / "vendor").mkdir()
    catalog = {"type": "Catalog", "stac_version": "1.1.0", "id": "c", "description": "d", "links": [
        {"rel": "child", "href": "../../outside/catalog.json"},
        {"rel": "item", "href": "https://evil.example.com/item.json"},
        {"rel": "item", "href": "file:///etc/passwd"},
        {"rel": "child", "href": "/vsicurl/http://127.0.0.1:1/c.json"},
        {"rel": "license", "href": "https://evil.example.com/license"}]}
    (tmp_path / "vendor" / "catalog.json").write_text(json.dumps(catalog))
    reader = DirectoryReader(tmp_path)
    read = stac_import.read_sources([BlobLocation("vendor", "catalog.json")], reader, POLICY)
    assert [f.error for f in read.failures] == ["HrefOutsideContainer", "HostNotAllowed", "LocalPathRefused",
                                                "HrefSchemeRefused"]
    assert all("link of vendor/catalog.json" in f.reason for f in read.failures)
    assert reader.reads == ["vendor/catalog.json"]


def _public(location: BlobLocation) -> stac_import.PublicHref:
    return stac_import.PublicHref(href=f"{AZURITE}{location}", alternates={"vsiaz": f"/vsiaz/{location}"})


def test_an_item_rewritten_points_at_its_cog_keeps_the_original_and_validates(vendor, validator):
    read = stac_import.read_sources([BlobLocation("vendor", "stac/catalog.json")], vendor, POLICY)
    source = read.items[0]
    item = stac_import.source_item(source.item)
    base = href_policy.location_from_text(source.base)
    plans = stac_import.plan_assets(item, base, POLICY)
    assert {p.key: p.raster for p in plans} == {"data": True, "elevation": True, "thumbnail": False,
                                                "metadata": False}
    cog = BlobLocation("cogs", "vendor/stac/vendor-scenes/scene-0/striped.tif")
    out = stac_import.imported_item(item, plans=plans, base=base, policy=POLICY, collection="imported",
                                    public=_public, converted={"data": cog}, cogs=["elevation"],
                                    provenance=source.location, digest="d" * 32)
    validator.validate_item(out)
    data = out["assets"]["data"]
    assert data["href"] == f"{AZURITE}{cog}" and data["type"] == COG_MEDIA_TYPE and data["roles"] == ["data"]
    assert data["alternate"]["vsiaz"] == {"href": f"/vsiaz/{cog}"}
    assert data["alternate"]["source"] == {"href": f"{AZURITE}vendor/stac/vendor-scenes/scene-0/striped.tif",
                                           "type": "image/tiff; application=geotiff", "title": "Original file"}
    assert out["assets"]["elevation"]["href"] == f"{AZURITE}vendor/stac/vendor-scenes/scene-0/cog.tif"
    assert out["assets"]["thumbnail"]["href"] == f"{AZURITE}vendor/stac/vendor-scenes/scene-0/thumb.png"
    assert out["assets"]["thumbnail"]["type"] == "image/png"
    assert ALTERNATE_EXT in out["stac_extensions"] and out["collection"] == "imported"
    assert out["properties"][IMPORTED_FROM] == "vendor/stac/vendor-scenes/scene-0/scene-0.json"
    assert out["properties"][IMPORT_DIGEST] == "d" * 32
    assert [l["rel"] for l in out["links"]] == ["collection"]  # the source's own structure is not kept


def test_assets_that_lead_nowhere_the_import_reads(validator):
    hrefs = {"data": "https://evil.example.com/a.tif", "thumbnail": "https://evil.example.com/t.png",
             "metadata": "s3://bucket/meta.json"}
    item = stac_import.source_item(item_dicts({"x": hrefs})[0])
    with pytest.raises(href_policy.HostNotAllowed, match="raster asset 'data'"):
        stac_import.plan_assets(item, BASE, POLICY)
    item["assets"].pop("data")  # previews and sidecars elsewhere are kept as written, never read
    plans = stac_import.plan_assets(item, BASE, POLICY)
    assert [p.location for p in plans] == [None, None]
    out = stac_import.imported_item(item, plans=plans, base=BASE, policy=POLICY, collection="c", public=_public,
                                    converted={}, cogs=[], provenance="vendor/x.json", digest="0")
    assert out["assets"]["thumbnail"]["href"] == hrefs["thumbnail"]
    validator.validate_item(out)
    for href, error in (("../../../../x.png", href_policy.HrefOutsideContainer), ("file:///x.png",
                                                                                href_policy.LocalPathRefused)):
        item["assets"]["thumbnail"]["href"] = href
        with pytest.raises(error, match="asset 'thumbnail'"):
            stac_import.plan_assets(item, BASE, POLICY)


def test_an_older_item_is_migrated_and_a_bad_one_is_named(validator):
    old = item_dicts({"old": {"data": "./a.tif"}})[0]
    old["stac_version"] = "1.0.0"
    item = stac_import.source_item(old)
    assert item["stac_version"] == "1.1.0"
    validator.validate_item(item)
    with pytest.raises(stac_import.InvalidSourceItem, match="item id"):
        stac_import.source_item({**old, "id": "has a space"})
    with pytest.raises(stac_import.InvalidSourceItem, match="no assets"):
        stac_import.source_item({**item, "assets": []})


def test_the_digest_moves_with_the_item_its_assets_its_target_and_options():
    item = item_dicts({"a": {"data": "./a.tif"}})[0]
    digest = stac_import.import_digest(item, collection="c", options={"profile": "deflate"},
                                       asset_versions={"data": "etag-1"})
    assert digest == stac_import.import_digest(json.loads(json.dumps(item)), collection="c",
                                               options={"profile": "deflate"}, asset_versions={"data": "etag-1"})
    for change in ({"asset_versions": {"data": "etag-2"}}, {"collection": "d"}, {"options": {"profile": "zstd"}}):
        args = {"collection": "c", "options": {"profile": "deflate"}, "asset_versions": {"data": "etag-1"}, **change}
        assert stac_import.import_digest(item, **args) != digest
    assert stac_import.import_digest({**item, "properties": {**item["properties"], "x": 1}}, collection="c",
                                     options={"profile": "deflate"}, asset_versions={"data": "etag-1"}) != digest


def test_duplicate_ids_in_one_collection_are_named():
    seen = stac_import.SeenItems()
    first = stac_import.SourceItem(name="a", location="vendor/x.ndjson, line 1", base="vendor/x.ndjson",
                                   item={"id": "a"})
    seen.check(first, "c")
    seen.check(first, "other")
    with pytest.raises(stac_import.DuplicateItem, match="line 1"):
        seen.check(first.model_copy(update={"location": "vendor/x.ndjson, line 9"}), "c")


@pytest.mark.parametrize("asset, raster", [
    ({"href": "a.tif", "type": "image/tiff; application=geotiff"}, True),
    ({"href": "a.bin", "type": "image/jp2"}, True),
    ({"href": "a.tif"}, True),
    ({"href": "https://x/a.TIFF?sig=1"}, True),
    ({"href": "a.tif", "roles": ["thumbnail"]}, False),
    ({"href": "a.png", "type": "image/png", "roles": ["data"]}, False),
    ({"href": "a.tif", "type": "application/json"}, False),
    ({"href": "a.nc", "type": "application/netcdf"}, False),
])
def test_which_assets_the_conversion_path_takes(asset, raster):
    assert stac_import.is_raster_asset(asset) is raster


def test_plain_geojson_is_not_stac(tmp_path):
    (tmp_path / "vendor").mkdir()
    plain = {"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": None, "properties": {}}]}
    (tmp_path / "vendor" / "parcels.geojson").write_text(json.dumps(plain))
    reader = DirectoryReader(tmp_path)
    roots = [BlobLocation("vendor", "parcels.geojson")]
    read = stac_import.read_sources(roots, reader, POLICY, follow_links=False, strict=False)  # under a prefix
    assert read.ignored == ["vendor/parcels.geojson"] and read.failures == [] and read.items == []
    read = stac_import.read_sources(roots, reader, POLICY)  # named by the request
    assert [(f.name, f.error) for f in read.failures] == [("vendor/parcels.geojson", "NotStac")]
    assert "without stac_version" in read.failures[0].reason
