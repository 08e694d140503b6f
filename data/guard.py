"""The one guard before every image decode: a file's header is read by this module (no decoder involved), and a file
that declares more pixels than a cap, is cut short, is not an image or is in a format we do not read is refused
with a `DataError` naming the file before OpenCV or Pillow ever decodes it.

Formats read: PNG, JPEG, BMP, WebP and TIFF, recognised by their first bytes (not by the file name). For each the
header gives the width, height and the EXIF orientation (TIFF: 1, as its decoders apply the tag themselves); a file
is *cut short* when the data its header promises
is not all there (PNG: no IEND chunk or a chunk running past the end; JPEG: no end-of-image marker after the first
scan; BMP: fewer pixel bytes than its rows need; WebP: fewer bytes than its RIFF size; TIFF: a strip or tile
beyond the end). The file is read whole only once its size is known to fit the cap (`max_file_bytes`), so the
memory a run needs never depends on what a hostile header claims.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from configs import DEFAULT_MAX_MEGAPIXELS

__all__ = ["DataError", "ImageTooLarge", "NotAnImage", "DEFAULT_MAX_MEGAPIXELS", "ImageHeader", "max_pixels_of",
           "max_file_bytes", "read_header", "check_image", "read_guarded"]

FORMATS_TEXT = "PNG, JPEG, BMP, WebP or TIFF"
# Formats recognised only to name them in the refusal: by their first bytes, and ISO media files (HEIC and AVIF
# photos of phones) by the brand after 'ftyp' at byte 4.
_OTHER_FORMATS = {b"GIF8": "GIF", b"\x00\x00\x01\x00": "ICO", b"8BPS": "PSD", b"%PDF": "PDF",
                  b"II+\x00": "BigTIFF", b"MM\x00+": "BigTIFF", b"\x00\x00\x00\x0cjP  ": "JPEG 2000"}
_ISO_BRANDS = {b"heic": "HEIC", b"heix": "HEIC", b"hevc": "HEIC", b"mif1": "HEIF", b"avif": "AVIF"}


@dataclass(frozen=True)
class ImageHeader:
    """What an image file's header says: its format ('png', 'jpeg', 'bmp', 'webp', 'tiff'), width and height in
    pixels as stored, and its EXIF orientation (1-8; 1 when it has none)."""

    format: str
    width: int
    height: int
    orientation: int = 1

    @property
    def pixels(self) -> int:
        return self.width * self.height


def max_pixels_of(megapixels: float | None) -> int:
    """The pixel cap of ``megapixels`` (None: `DEFAULT_MAX_MEGAPIXELS`)."""
    return int(round((DEFAULT_MAX_MEGAPIXELS if megapixels is None else megapixels) * 1e6))


def max_file_bytes(max_pixels: int) -> int:
    """The largest file accepted under a pixel cap: 16-bit RGBA stored uncompressed, plus 16 MiB of metadata."""
    return max_pixels * 8 + 2**24


class DataError(ValueError):
    """Bad or missing input data; the message is one line and names the file, pair or folder."""


class ImageTooLarge(DataError):
    """An image refused for its size: more pixels than the cap, or a file larger than any image within it."""


class NotAnImage(DataError):
    """A file that is empty, not an image, or an image in a format we do not read."""


class _Cut(Exception):
    """The header reading ran past the end of the data."""


def _unpack(fmt: str, data: bytes, offset: int) -> tuple:
    if offset < 0 or offset + struct.calcsize(fmt) > len(data):
        raise _Cut
    return struct.unpack_from(fmt, data, offset)


# Bytes per value of each TIFF field type, and the struct codes of the integer types.
_TIFF_TYPE_BYTES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8, 17: 8,
                    18: 8}
_TIFF_INTEGERS = {1: "B", 3: "H", 4: "I", 16: "Q"}


def _tiff_tags(data: bytes, start: int, wanted: set[int]) -> dict[int, list[int]]:
    """The values of the ``wanted`` tags of the first IFD of the TIFF structure at ``data[start:]`` (offsets in it
    are relative to ``start``)."""
    order = {b"II": "<", b"MM": ">"}.get(data[start:start + 2])
    if order is None or _unpack(order + "H", data, start + 2)[0] != 42:
        raise ValueError("not a TIFF structure")
    (ifd,) = _unpack(order + "I", data, start + 4)
    (count,) = _unpack(order + "H", data, start + ifd)
    _unpack(order + "I", data, start + ifd + 2 + 12 * count)  # the next-IFD link closes the table
    tags: dict[int, list[int]] = {}
    for entry in range(count):
        tag, kind, values = _unpack(order + "HHI", data, start + ifd + 2 + 12 * entry)
        at, length = start + ifd + 2 + 12 * entry + 8, _TIFF_TYPE_BYTES.get(kind, 1) * values
        if length > 4:
            at = start + _unpack(order + "I", data, at)[0]
            if at + length > len(data):  # every value out of line must be there, not only the wanted ones
                raise _Cut
        if tag in wanted and kind in _TIFF_INTEGERS:
            tags[tag] = list(_unpack(f"{order}{values}{_TIFF_INTEGERS[kind]}", data, at))
    return tags


def _orientation(data: bytes, start: int) -> int:
    """The orientation tag of an EXIF block (a TIFF structure, optionally after 'Exif\\0\\0'); 1 if unreadable."""
    if data[start:start + 6] == b"Exif\x00\x00":
        start += 6
    try:
        value = _tiff_tags(data, start, {274}).get(274, [1])[0]
    except (ValueError, _Cut):
        return 1
    return value if 1 <= value <= 8 else 1


def _png(data: bytes) -> ImageHeader:
    width, height = _unpack(">II", data, 16)
    if data[12:16] != b"IHDR":
        raise ValueError("no IHDR chunk")
    orientation, offset = 1, 8
    while True:
        length, kind = _unpack(">I4s", data, offset)
        if offset + 12 + length > len(data):
            raise _Cut
        if kind == b"eXIf":
            orientation = _orientation(data[offset + 8:offset + 8 + length], 0)
        if kind == b"IEND":
            return ImageHeader("png", width, height, orientation)
        offset += 12 + length


# JPEG start-of-frame markers (C4, C8 and CC are other segments).
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg(data: bytes) -> ImageHeader:
    offset, size, orientation = 2, None, 1
    while True:
        marker_byte, marker = _unpack("BB", data, offset)
        if marker_byte != 0xFF:
            raise ValueError("a segment does not start with a marker")
        if marker == 0xFF:  # fill byte
            offset += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            offset += 2
            continue
        (length,) = _unpack(">H", data, offset + 2)
        if offset + 2 + length > len(data):
            raise _Cut
        if marker in _SOF:
            height, width = _unpack(">HH", data, offset + 5)
            size = (width, height)
        elif marker == 0xE1 and orientation == 1:
            orientation = _orientation(data[offset + 4:offset + 2 + length], 0)
        elif marker == 0xDA:  # start of scan: entropy-coded data, in which FF D9 cannot occur, up to end of image
            if size is None:
                raise ValueError("no frame header before the image data")
            if data.find(b"\xff\xd9", offset + 2 + length) < 0:
                raise _Cut
            return ImageHeader("jpeg", *size, orientation)
        elif marker == 0xD9:
            raise ValueError("no image data")
        offset += 2 + length


def _bmp(data: bytes) -> ImageHeader:
    (pixel_offset, header_size) = _unpack("<II", data, 10)
    if header_size == 12:  # OS/2 core header
        width, height, _, bits = _unpack("<HHHH", data, 18)
        compression = 0
    else:
        width, height, _, bits, compression = _unpack("<iiHHI", data, 18)
    height = abs(height)
    if width <= 0 or bits not in (1, 2, 4, 8, 16, 24, 32):
        raise ValueError("bad BMP header")
    if compression in (0, 3) and pixel_offset + (bits * width + 31) // 32 * 4 * height > len(data):
        raise _Cut
    return ImageHeader("bmp", width, height)


def _webp(data: bytes) -> ImageHeader:
    (riff_size,) = _unpack("<I", data, 4)
    if len(data) < 8 + riff_size:
        raise _Cut
    kind = data[12:16]
    if kind == b"VP8 ":
        width, height = (value & 0x3FFF for value in _unpack("<HH", data, 26))
    elif kind == b"VP8L":
        (bits,) = _unpack("<I", data, 21)
        width, height = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    elif kind == b"VP8X":
        low_w, high_w, low_h, high_h = _unpack("<HBHB", data, 24)
        width, height = (low_w | high_w << 16) + 1, (low_h | high_h << 16) + 1
    else:
        raise ValueError("unknown WebP chunk")
    orientation, offset = 1, 12
    while offset + 8 <= 8 + riff_size:
        chunk, length = _unpack("<4sI", data, offset)
        if chunk == b"EXIF":
            orientation = _orientation(data[offset + 8:offset + 8 + length], 0)
        offset += 8 + length + (length & 1)
    return ImageHeader("webp", width, height, orientation)


def _tiff(data: bytes) -> ImageHeader:
    tags = _tiff_tags(data, 0, {256, 257, 273, 279, 324, 325})
    if 256 not in tags or 257 not in tags:
        raise ValueError("no image size in the first IFD")
    for offsets, counts in ((273, 279), (324, 325)):
        if offsets in tags and counts in tags:
            if any(o + c > len(data) for o, c in zip(tags[offsets], tags[counts], strict=False)):
                raise _Cut
    # The TIFF decoders (libtiff's RGBA reading, in OpenCV as in Pillow) apply the orientation tag themselves, so
    # the pixels they give are as the file means them: no orientation is left to apply.
    return ImageHeader("tiff", tags[256][0], tags[257][0])


def _format_of(data: bytes) -> str | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(b"BM"):
        return "bmp"
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "webp"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    return None


def read_header(data: bytes, name: str | os.PathLike) -> ImageHeader:
    """The header of the image file whose bytes are ``data`` (``name`` names it in messages). Raises `DataError`
    for an empty file, a format we do not read, a header that makes no sense, or a file cut short."""
    if not data:
        raise NotAnImage(f"empty file {name} (0 bytes)")
    kind = _format_of(data)
    if kind is None:
        other = next((label for magic, label in _OTHER_FORMATS.items() if data.startswith(magic)), None)
        if data[4:8] == b"ftyp":
            other = _ISO_BRANDS.get(data[8:12], "video or ISO media")
        what = f"{'an' if other[0] in 'AEIOU' else 'a'} {other} file" if other else "not an image"
        raise NotAnImage(f"cannot read {name}: {what} ({FORMATS_TEXT} are read)")
    try:
        header = {"png": _png, "jpeg": _jpeg, "bmp": _bmp, "webp": _webp, "tiff": _tiff}[kind](data)
    except _Cut:
        raise DataError(f"cannot read {name}: truncated {kind.upper()} file (its data ends early)") from None
    except (ValueError, struct.error) as err:
        raise DataError(f"cannot read {name}: damaged {kind.upper()} header ({err})") from None
    if header.width <= 0 or header.height <= 0:
        raise DataError(f"cannot read {name}: its {kind.upper()} header declares {header.width}x{header.height} "
                        "pixels")
    return header


def read_guarded(path: str | os.PathLike, max_pixels: int) -> tuple[bytes, ImageHeader]:
    """The bytes and header of the image file ``path``, refused (`DataError` naming the file) unless it is a whole
    image of a format we read with at most ``max_pixels`` pixels; the file is read only after its size is checked
    against `max_file_bytes`."""
    try:
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            if size > max_file_bytes(max_pixels):
                raise ImageTooLarge(f"refused {path}: a file of {size / 2**20:.0f} MiB is larger than any image "
                                    f"within the pixel cap ({max_pixels / 1e6:g} megapixels; --max-megapixels "
                                    "raises it)")
            data = file.read()
    except IsADirectoryError:
        raise DataError(f"cannot read {path}: it is a folder, not an image file") from None
    except OSError as err:
        raise DataError(f"cannot read file {path}: {err.strerror or err}") from None
    return data, check_image(data, path, max_pixels)


def check_image(data: bytes, name: str | os.PathLike, max_pixels: int) -> ImageHeader:
    """The header of an image file's bytes (`read_header`), refused (`ImageTooLarge`) when it declares more than
    ``max_pixels`` pixels."""
    header = read_header(data, name)
    if header.pixels > max_pixels:
        raise ImageTooLarge(f"refused {name}: {header.format.upper()} of {header.width}x{header.height} = "
                            f"{header.pixels / 1e6:.1f} megapixels is over the cap of {max_pixels / 1e6:g} "
                            "(--max-megapixels raises it)")
    return header
