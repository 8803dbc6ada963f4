"""A minimal reader for uncompressed scanline OpenEXR files (what the tests make Blender write).

Enough to check every pass of Blender's multilayer EXR without OpenImageIO: single-part or multi-part (Blender
5 writes one part per pass), scanlines, half or float channels, compression NONE.
Returns {channel name: (H, W) float32}, row 0 at the top of the image.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

# Blender-side helper for the scripts that write such files (prepend it): the setting moved in Blender 5.0.
SET_MULTILAYER_EXR = """
def set_multilayer_exr(settings):
    if hasattr(settings, "media_type"):  # Blender 5.0+: the media type picks the multilayer EXR
        settings.media_type = "MULTI_LAYER_IMAGE"
    else:
        settings.file_format = "OPEN_EXR_MULTILAYER"
    settings.exr_codec = "NONE"
    settings.color_depth = "32"
"""

_PIXEL_TYPES = {0: np.dtype("<u4"), 1: np.dtype("<f2"), 2: np.dtype("<f4")}


def _cstring(data: bytes, at: int) -> tuple[str, int]:
    end = data.index(b"\0", at)
    return data[at:end].decode(), end + 1


def _header(data: bytes, at: int) -> tuple[dict[str, bytes], int]:
    header = {}
    while data[at] != 0:
        name, at = _cstring(data, at)
        _, at = _cstring(data, at)
        (size,) = struct.unpack_from("<i", data, at)
        header[name] = data[at + 4:at + 4 + size]
        at += 4 + size
    return header, at + 1


def _channels(chlist: bytes) -> list[tuple[str, np.dtype]]:
    channels, at = [], 0
    while chlist[at] != 0:
        name, at = _cstring(chlist, at)
        (pixel_type,) = struct.unpack_from("<i", chlist, at)
        channels.append((name, _PIXEL_TYPES[pixel_type]))
        at += 16
    return channels


def read_exr(path: str | Path) -> dict[str, np.ndarray]:
    data = Path(path).read_bytes()
    if data[:4] != b"\x76\x2f\x31\x01":
        raise ValueError(f"{path}: not an OpenEXR file")
    (version,) = struct.unpack_from("<i", data, 4)
    multipart = bool(version & 0x1000)
    headers, at = [], 8
    while True:
        header, at = _header(data, at)
        headers.append(header)
        if not multipart or data[at] == 0:
            break
    at += 1 if multipart else 0
    tables = []
    for header in headers:
        if header["compression"][0] != 0:
            raise ValueError(f"{path}: compressed EXR (write it with exr_codec NONE)")
        _, ymin, _, ymax = struct.unpack("<4i", header["dataWindow"])
        tables.append(np.frombuffer(data, "<u8", count=ymax - ymin + 1, offset=at))
        at += 8 * (ymax - ymin + 1)
    out: dict[str, np.ndarray] = {}
    for header, offsets in zip(headers, tables):
        xmin, ymin, xmax, ymax = struct.unpack("<4i", header["dataWindow"])
        width, channels = xmax - xmin + 1, _channels(header["channels"])
        planes = {name: np.empty((ymax - ymin + 1, width), np.float32) for name, _ in channels}
        for offset in offsets:
            pos = int(offset) + (4 if multipart else 0)
            (y,) = struct.unpack_from("<i", data, pos)
            pos += 8
            for name, dtype in channels:
                planes[name][y - ymin] = np.frombuffer(data, dtype, count=width, offset=pos)
                pos += width * dtype.itemsize
        out.update(planes)
    return out
