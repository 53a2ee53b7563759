"""The COG compression profiles and what their codecs can take: the one home of these facts.
Plain Python (no GDAL), so request models can name the profiles without loading rasterio.
"""
from __future__ import annotations


#: Creation options of the GDAL COG driver per compression profile. ``PREDICTOR=YES`` lets GDAL
#: pick the predictor by data type: floating-point (3) for floats, horizontal (2) for integers.
#: LERC is lossless at ``MAX_Z_ERROR=0``; ``to_cog(max_z_error=...)`` trades accuracy for bytes.
COG_PROFILES: dict[str, dict[str, str]] = {
    "deflate": {"COMPRESS": "DEFLATE", "PREDICTOR": "YES"},
    "zstd": {"COMPRESS": "ZSTD", "PREDICTOR": "YES"},
    "lzw": {"COMPRESS": "LZW", "PREDICTOR": "YES"},
    "lerc": {"COMPRESS": "LERC_ZSTD", "MAX_Z_ERROR": "0"},
    "lerc_deflate": {"COMPRESS": "LERC_DEFLATE", "MAX_Z_ERROR": "0"},
    "webp": {"COMPRESS": "WEBP", "QUALITY": "85"},
    "jpeg": {"COMPRESS": "JPEG", "QUALITY": "85"},
    "none": {"COMPRESS": "NONE"},
}


#: Codecs that take ``MAX_Z_ERROR``.
LERC_CODECS = frozenset({"LERC", "LERC_ZSTD", "LERC_DEFLATE"})
#: Profiles that take ``max_z_error`` (their codec is LERC).
LERC_PROFILES = frozenset(name for name, options in COG_PROFILES.items() if options["COMPRESS"] in LERC_CODECS)


#: Profiles whose output decodes to exactly the source's pixels (LERC ones at max_z_error 0, which
#: keep every visible pixel but store those under a fully transparent alpha as 0).
LOSSLESS_PROFILES = frozenset({"deflate", "zstd", "lzw", "lerc", "lerc_deflate", "none"})


#: Codecs limited to 8-bit imagery: 1 (grey), 3 (RGB) or 4 (RGBA) bands.
EIGHT_BIT_CODECS = frozenset({"JPEG", "WEBP"})
