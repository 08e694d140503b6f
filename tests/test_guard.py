"""The decode guard (data/guard.py): headers read by our own code give the sizes and EXIF orientations Pillow and
OpenCV give, for every format and mode we read; files cut short at any point, empty files, other formats and images
over the pixel cap are refused by name before any decoder runs."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from data.guard import DataError, max_file_bytes, max_pixels_of, read_guarded, read_header
from data.readers import decode_image, read_rgb

FORMATS = {"PNG": {}, "JPEG": {}, "BMP": {}, "WEBP": {"lossless": False}, "TIFF": {"compression": "tiff_lzw"}}
MODES = ("RGB", "L", "RGBA", "P", "I;16")


def pillow_file(fmt: str, mode: str, width: int, height: int, exif_orientation: int | None = None) -> bytes | None:
    """An image file written by Pillow (None where Pillow cannot write that mode in that format)."""
    rng = np.random.default_rng(width * height)
    image = Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).convert(mode)
    options = dict(FORMATS[fmt])
    if exif_orientation is not None:
        exif = image.getexif()
        exif[0x0112] = exif_orientation
        options["exif"] = exif
    buffer = io.BytesIO()
    try:
        image.save(buffer, fmt, **options)
    except (OSError, ValueError, KeyError):
        return None
    return buffer.getvalue()


def test_headers_give_pillows_sizes_and_every_cut_is_refused() -> None:
    checked = 0
    for fmt in FORMATS:
        for mode in MODES:
            for width, height in ((1, 1), (7, 5), (301, 211)):
                data = pillow_file(fmt, mode, width, height)
                if data is None:
                    continue
                header = read_header(data, "x")
                assert (header.width, header.height) == Image.open(io.BytesIO(data)).size
                assert header.format == fmt.lower()
                for cut in sorted({len(data) // 2, len(data) - 1, len(data) - 3, 12}):
                    with pytest.raises(DataError, match="cannot read x: (truncated|damaged)"):
                        read_header(data[:cut], "x")
                checked += 1
    assert checked >= 60


@pytest.mark.parametrize("extension", [".png", ".jpg", ".bmp", ".webp", ".tif"])
def test_headers_of_opencv_files(extension: str) -> None:
    rng = np.random.default_rng(3)
    for height, width in ((1, 1), (4, 9), (120, 333)):
        data = cv2.imencode(extension, rng.integers(0, 255, (height, width, 3), dtype=np.uint8))[1].tobytes()
        header = read_header(data, "x")
        assert (header.height, header.width) == (height, width)
        with pytest.raises(DataError, match="truncated"):
            read_header(data[:len(data) - 1], "x")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF"])
@pytest.mark.parametrize("orientation", [1, 2, 3, 6, 8])
def test_exif_orientation_from_the_header_is_pillows(fmt: str, orientation: int, tmp_path: Path) -> None:
    """The tag as Pillow reads it, and the upright pixels as Pillow's exif_transpose gives them (lossless formats;
    TIFF: both decoders apply the tag while decoding, so the header reports none and the pixels are Pillow's)."""
    data = pillow_file(fmt, "RGB", 9, 5, orientation)
    tag = Image.open(io.BytesIO(data)).getexif().get(0x0112, 1)
    assert tag == orientation and read_header(data, "x").orientation == (1 if fmt == "TIFF" else orientation)
    path = tmp_path / f"x.{fmt.lower()}"
    path.write_bytes(data)
    upright = read_rgb(path, orient=True)
    if fmt == "TIFF":
        np.testing.assert_array_equal(upright, np.asarray(Image.open(path).convert("RGB")))
    elif fmt == "PNG":
        np.testing.assert_array_equal(upright, np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB")))
    else:
        assert upright.shape[:2] == ((9, 5) if orientation in (6, 8) else (5, 9))


def png(width: int, height: int, rows: int | None = None) -> bytes:
    """A grey 8-bit PNG declaring width x height whose IDAT holds ``rows`` all-black rows (default: all of them),
    compressed row by row, so that a 20000 x 20000 file takes no more memory to write than one row."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    compressor, row = zlib.compressobj(9), bytes(width + 1)
    idat = b"".join(compressor.compress(row) for _ in range(height if rows is None else rows)) + compressor.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def test_the_pixel_cap_refuses_bombs_and_passes_a_48_megapixel_photo(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png(60000, 60000, rows=1))
    with pytest.raises(DataError, match=r"refused .*bomb.png: PNG of 60000x60000 = 3600.0 megapixels is over the "
                                        r"cap of 64 \(--max-megapixels raises it\)"):
        decode_image(bomb)
    photo = tmp_path / "photo.png"
    photo.write_bytes(png(8000, 6000))
    assert read_guarded(photo, max_pixels_of(None))[1].pixels == 48_000_000
    with pytest.raises(DataError, match="over the cap of 40"):
        read_guarded(photo, max_pixels_of(40))
    assert max_pixels_of(0.5) == 500_000 and max_file_bytes(10) == 80 + 2**24


@pytest.mark.parametrize(("content", "message"), [
    (b"", r"empty file .*x.png \(0 bytes\)"),
    (b"GIF89a" + bytes(20), r"cannot read .*x.png: a GIF file \(PNG, JPEG, BMP, WebP or TIFF are read\)"),
    (b"hello, world", r"cannot read .*x.png: not an image"),
    (b"\x00\x00\x00\x18ftypheic" + bytes(20), r"cannot read .*x.png: a HEIC file \(PNG, JPEG, BMP, WebP or TIFF"),
    (b"\x00\x00\x00\x1cftypavif" + bytes(20), r"cannot read .*x.png: an AVIF file"),
    (b"II+\x00" + bytes(20), r"cannot read .*x.png: a BigTIFF file"),
    (b"\x89PNG\r\n\x1a\n" + bytes(30), r"cannot read .*x.png: (damaged|truncated) PNG"),
])
def test_what_is_not_an_image_we_read_is_named(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "x.png"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        decode_image(path)


def test_a_folder_or_an_oversized_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    (tmp_path / "dir.jpg").mkdir()
    with pytest.raises(DataError, match=r"cannot read .*dir.jpg: it is a folder"):
        decode_image(tmp_path / "dir.jpg")
    big = tmp_path / "big.bmp"
    with open(big, "wb") as file:  # sparse: 20 MiB of file size, no data written
        file.truncate(20 * 2**20)
    with pytest.raises(DataError, match=r"refused .*big.bmp: a file of 20 MiB is larger than any image within the "
                                        r"pixel cap \(0.5 megapixels"):
        read_guarded(big, max_pixels_of(0.5))


def test_damaged_pixel_data_behind_a_whole_header_is_one_line(tmp_path: Path) -> None:
    data = bytearray(cv2.imencode(".png", np.full((40, 40), 7, np.uint8))[1].tobytes())
    start = data.index(b"IDAT") + 4
    data[start:start + 8] = b"\xff" * 8  # the zlib stream, not the chunk layout
    path = tmp_path / "x.png"
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"cannot decode image file .*x.png \(PNG data damaged\)"):
        decode_image(path)


def test_a_video_whose_frames_are_over_the_cap_is_refused_before_decoding(tmp_path: Path) -> None:
    from data.video import open_video

    writer = cv2.VideoWriter(str(tmp_path / "v.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
    for _ in range(3):
        writer.write(np.zeros((48, 64, 3), np.uint8))
    writer.release()
    with pytest.raises(DataError, match=r"refused .*v.mp4: frames of 64x48 = 0.0 megapixels are over the cap of "
                                        r"0.003 \(--max-megapixels raises it\)"):
        open_video(tmp_path / "v.mp4", max_pixels=3000)
    video = open_video(tmp_path / "v.mp4", max_pixels=3072)
    assert (video.width, video.height, video.frame_count) == (64, 48, 3)
    video.release()
