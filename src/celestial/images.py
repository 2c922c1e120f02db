"""Safe decoding of untrusted image bytes (used by the service, and by the data loader).

Everything that can go wrong with a user upload is turned into `ImageRejected`, which
carries the HTTP status the service should answer with, so no bad input becomes a 500.
Only Pillow is imported here: this module ships in the service image.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, UnidentifiedImageError

# Formats we accept; limiting them keeps rarely used (and rarely audited) decoders out.
ALLOWED_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF")
# Uploads bigger than this are refused before Pillow sees them.
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
# A decompression bomb is a small file that declares huge dimensions: refuse anything
# above 4096x4096 from the header alone, before a single pixel is decoded.
MAX_PIXELS = 4096 * 4096


class ImageRejected(ValueError):
    """The bytes are not an image we can classify; `status` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode untrusted bytes into a fully loaded PIL image, or raise `ImageRejected`.

    Checks, in order: empty body, byte size, format recognised (header only), declared
    dimensions (before decoding), then the full decode (catches truncated files).
    """
    if not data:
        raise ImageRejected("empty file: send an image in the 'image' field", 400)
    if len(data) > MAX_UPLOAD_BYTES:
        raise ImageRejected(f"file too large: {len(data)} bytes > {MAX_UPLOAD_BYTES}", 413)
    with warnings.catch_warnings():
        # Pillow only *warns* between MAX_IMAGE_PIXELS and twice that: make it an error.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise ImageRejected(f"image dimensions too large: {e}", 413) from None
        except UnidentifiedImageError:
            raise ImageRejected(
                f"not a supported image (accepted formats: {', '.join(ALLOWED_FORMATS)})", 400
            ) from None
        except Exception as e:  # corrupt headers make some decoders raise anything
            raise ImageRejected(f"cannot read image header: {e}", 400) from None

        width, height = img.size
        if width < 1 or height < 1:
            raise ImageRejected(f"invalid image size {width}x{height}", 400)
        if width * height > max_pixels:
            raise ImageRejected(
                f"image too large: {width}x{height} = {width * height} pixels (limit {max_pixels})",
                413,
            )
        try:
            img.load()  # the real decode; truncated or corrupt data fails here
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise ImageRejected(f"image dimensions too large: {e}", 413) from None
        except Exception as e:
            raise ImageRejected(f"corrupt or truncated image: {e}", 400) from None
    return img
