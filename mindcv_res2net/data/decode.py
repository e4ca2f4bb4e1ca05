"""Robust image reading: one broken file among a million must not stop training.

The fast path keeps the C++ fused decode (``RandomCropDecodeResize`` / ``Decode``) for the
common case, an ordinary 8-bit baseline or progressive JPEG.  Before the bytes go to C++, the
file's marker structure is checked in Python (cheap: a walk over the segment headers and one
regular-expression pass for markers after the first scan), because the C++ decoder raises on
a truncated or malformed file and that error would end the whole pipeline.

Everything else goes through Pillow (the "slow path", rare on ImageNet: CMYK JPEGs, PNG files,
greyscale with alpha, palette, 16-bit, EXIF-rotated, very large images) and is handed on as
an uncompressed 8-bit RGB PPM, which the C++ decoders read at memcpy speed.

``read_image_bytes(path)`` returns ``(payload, None)`` or ``(None, reason)``; callers decide
whether a bad file is skipped, replaced or fatal (see :mod:`.dataset`).
"""
import io
import logging
import re
import struct
import threading
import warnings

import numpy as np
from PIL import Image, ImageOps

_logger = logging.getLogger(__name__)

# File names read as images (lower-cased suffix): by the image-folder datasets and by predict.py
# when it walks a folder. Other files there are left alone.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".pbm", ".pnm", ".tif",
                    ".tiff", ".webp", ".gif", ".jfif", ".jpe")

# Above this many pixels an image is reduced (JPEG DCT scaling, then resize) before it goes to
# the C++ decoder; a 24000 x 16000 photo would otherwise need 1.1 GB per decode.
LARGE_IMAGE_PIXELS = 40_000_000
# Images other than JPEG above this size are refused before any pixel is decoded: only JPEG
# can be decoded at a reduced size (DCT scaling); a PNG, TIFF, WebP, ... must be decoded in full
# before it can be reduced. Measured with Pillow 13.0 on a 280 KB 16-bit 12000 x 12000 PNG
# (144 MP): a full decode and reduction took 4.4 s and 990 MB of peak memory per image.
MAX_NON_JPEG_PIXELS = 40_000_000

_SOF_FAST = {0xC0, 0xC1, 0xC2}  # baseline, extended sequential, progressive (Huffman)
_SOF_ALL = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
# A marker inside entropy-coded data: 0xFF followed by neither 0x00 (stuffing), 0xFF (fill)
# nor a restart marker 0xD0-0xD7.
_MARKER_RE = re.compile(rb"\xff[^\x00\xff\xd0-\xd7]")
_APP_COM = set(range(0xE0, 0xF0)) | {0xFE}
# Markers accepted between scans. Other markers there, application/comment segments between
# scans, and scans that use a Huffman table never defined make the C++ decoder fail or, for
# some damaged progressive files, crash the whole process; such files go to Pillow instead.
_AFTER_SCAN_OK = {0xC4, 0xDA, 0xDB, 0xDD}
_BEFORE_SCAN_OK = _AFTER_SCAN_OK | _SOF_ALL | _APP_COM | {0xCC, 0xDC}


class BadImage(Exception):
    """Raised internally when a file cannot be decoded; the message is the reason.

    ``transient``: the file could not be read (I/O error) rather than decoded; worth a retry
    in a later epoch.
    """

    def __init__(self, reason, transient=False):
        super().__init__(reason)
        self.transient = transient


class BadImageCounter:
    """Thread-safe record of unreadable files, shared by a data set and its loaders.

    ``pop_count()`` returns the number of skips since the previous call and resets it; the
    trainer calls it once per epoch (the count then covers what the pipeline read in that
    time, which can include a few prefetched samples of the next epoch). Every bad file is
    logged once by name; ``names`` holds them all.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._count = 0
        self.total = 0
        self.names = {}
        self.fatal = None  # the UserError raised in strict mode, for iterator wrappers

    def record(self, path, reason):
        with self._lock:
            self._count += 1
            self.total += 1
            first = path not in self.names
            if first:
                self.names[path] = reason
        if first:
            _logger.warning("skipping unreadable image %s: %s", path, reason)

    def pop_count(self):
        """Skipped files since the last call (read-and-reset)."""
        with self._lock:
            count, self._count = self._count, 0
        return count

    def peek_count(self):
        with self._lock:
            return self._count

    def __repr__(self):
        return f"BadImageCounter(pending={self._count}, total={self.total}, files={len(self.names)})"


# ----------------------------------------------------------------------------------------------
# JPEG structure check

class JpegInfo:
    __slots__ = ("width", "height", "components", "sof", "precision", "orientation", "adobe_transform")

    def __init__(self):
        self.width = self.height = self.components = self.sof = self.precision = None
        self.orientation = None
        self.adobe_transform = None


def _exif_orientation(payload):
    """Orientation tag (0x0112) from an APP1 Exif payload, or None when absent or unreadable."""
    tiff = payload[6:]
    if len(tiff) < 8:
        return None
    order = tiff[:2]
    if order == b"II":
        end = "<"
    elif order == b"MM":
        end = ">"
    else:
        return None
    try:
        (ifd,) = struct.unpack(end + "I", tiff[4:8])
        (count,) = struct.unpack(end + "H", tiff[ifd:ifd + 2])
        for k in range(count):
            entry = ifd + 2 + 12 * k
            tag, typ = struct.unpack(end + "HH", tiff[entry:entry + 4])
            if tag == 0x0112:
                if typ == 3:  # SHORT
                    return struct.unpack(end + "H", tiff[entry + 8:entry + 10])[0]
                if typ == 4:  # LONG (seen in the wild)
                    return struct.unpack(end + "I", tiff[entry + 8:entry + 12])[0]
                return None
    except struct.error:
        return None
    return None


def _check_dqt(seg, quant):
    pos = 0
    while pos < len(seg):
        pq, tq = seg[pos] >> 4, seg[pos] & 15
        if pq > 1 or tq > 3:
            raise BadImage("corrupt JPEG quantisation table")
        pos += 1 + 64 * (pq + 1)
        if pos > len(seg):
            raise BadImage("corrupt JPEG quantisation table length")
        quant.add(tq)


def _check_dht(seg, huff):
    pos = 0
    while pos < len(seg):
        if pos + 17 > len(seg):
            raise BadImage("corrupt JPEG Huffman table length")
        tc, th = seg[pos] >> 4, seg[pos] & 15
        if tc > 1 or th > 3:
            raise BadImage("corrupt JPEG Huffman table index")
        counts = seg[pos + 1:pos + 17]
        total = sum(counts)
        if total > 256 or pos + 17 + total > len(seg):
            raise BadImage("corrupt JPEG Huffman table")
        # The canonical code must fit: at each length the codes used so far stay below 2**length
        # (the all-ones code is reserved), as libjpeg checks when it builds the decoder table.
        last = max((k for k in range(16) if counts[k]), default=-1)
        code = 0
        for k in range(last + 1):
            code += counts[k]
            if code >= (1 << (k + 1)):
                raise BadImage("corrupt JPEG Huffman table")
            code <<= 1
        if tc == 0 and any(v > 15 for v in seg[pos + 17:pos + 17 + total]):
            raise BadImage("corrupt JPEG Huffman table")
        huff.add((tc, th))
        pos += 17 + total


def _check_misc(marker, seg):
    if marker == 0xDD and len(seg) != 2:
        raise BadImage("corrupt JPEG restart interval")
    if marker == 0xCC and (len(seg) % 2 or any(seg[k] & 15 > 3 or seg[k] >> 4 > 1 for k in range(0, len(seg), 2))):
        raise BadImage("corrupt JPEG arithmetic-coding table")
    if marker == 0xDC and len(seg) != 2:
        raise BadImage("corrupt JPEG line-count segment")


def _check_sos(seg, info, comp_ids, huff):
    if info.sof is None:
        raise BadImage("JPEG scan before frame header")
    if not seg:
        raise BadImage("corrupt JPEG scan header")
    ns = seg[0]
    if ns < 1 or ns > 4 or len(seg) != 4 + 2 * ns:
        raise BadImage("corrupt JPEG scan header")
    for k in range(ns):
        cid, tables = seg[1 + 2 * k], seg[2 + 2 * k]
        if cid not in comp_ids or (tables >> 4) > 3 or (tables & 15) > 3:
            raise BadImage("corrupt JPEG scan header")
    ss, se, ahl = seg[1 + 2 * ns], seg[2 + 2 * ns], seg[3 + 2 * ns]
    ah, al = ahl >> 4, ahl & 15
    progressive = info.sof in (0xC2, 0xC6, 0xCA, 0xCE)
    if progressive:  # libjpeg refuses bad parameters
        if ss == 0:
            bad = se != 0
        else:
            bad = ss > se or se > 63 or ns != 1
        if (ah != 0 and al != ah - 1) or al > 13 or bad:
            raise BadImage("corrupt JPEG progressive scan parameters")
    if info.sof in (0xC0, 0xC1, 0xC2):  # Huffman-coded: the tables a scan uses must exist
        for k in range(ns):
            tables = seg[2 + 2 * k]
            need = []
            if not progressive:
                need = [(0, tables >> 4), (1, tables & 15)]
            elif ss == 0 and ah == 0:
                need = [(0, tables >> 4)]
            elif ss > 0:
                need = [(1, tables & 15)]
            if any(t not in huff for t in need):
                raise BadImage("JPEG scan uses an undefined Huffman table")


def _check_sof(marker, seg, info, comp_ids, comp_quant):
    """Check a frame header and record its size, precision and components in ``info``."""
    if info.sof is not None:
        raise BadImage("JPEG with two frame headers")
    if len(seg) < 6:
        raise BadImage("corrupt JPEG frame header")
    info.sof = marker
    info.precision = seg[0]
    info.height, info.width = (seg[1] << 8) | seg[2], (seg[3] << 8) | seg[4]
    info.components = seg[5]
    if info.components < 1 or len(seg) != 6 + 3 * info.components or info.width == 0:
        raise BadImage("corrupt JPEG frame header")
    for k in range(info.components):
        cid, hv, tq = seg[6 + 3 * k:9 + 3 * k]
        if not (1 <= hv >> 4 <= 4 and 1 <= hv & 15 <= 4) or tq > 3:
            raise BadImage("corrupt JPEG frame header")
        comp_ids.add(cid)
        comp_quant.append(tq)


def _walk_header(data, info, quant, huff, comp_ids, comp_quant):
    """Check the segments up to the first scan header; return the position just after it."""
    n = len(data)
    pos = 2
    while True:
        if pos + 4 > n:
            raise BadImage("truncated JPEG header")
        if data[pos] != 0xFF:
            raise BadImage("corrupt JPEG marker structure")
        while pos < n and data[pos] == 0xFF:
            pos += 1
        if pos + 3 > n:
            raise BadImage("truncated JPEG header")
        marker = data[pos]
        if marker == 0xD9:
            raise BadImage("JPEG without image data")
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:
            pos += 1
            continue
        if marker not in _BEFORE_SCAN_OK:
            raise BadImage(f"unsupported JPEG marker 0x{marker:02x}")
        length = (data[pos + 1] << 8) | data[pos + 2]
        end = pos + 1 + length
        if length < 2 or end > n:
            raise BadImage("truncated or corrupt JPEG segment")
        seg = data[pos + 3:end]
        if marker == 0xE1 and seg[:6] == b"Exif\x00\x00" and info.orientation is None:
            info.orientation = _exif_orientation(seg)
        elif marker == 0xEE and seg[:5] == b"Adobe" and len(seg) >= 12:
            info.adobe_transform = seg[11]
        elif marker == 0xDB:
            _check_dqt(seg, quant)
        elif marker == 0xC4:
            _check_dht(seg, huff)
        elif marker in _SOF_ALL:
            _check_sof(marker, seg, info, comp_ids, comp_quant)
        elif marker == 0xDA:
            _check_sos(seg, info, comp_ids, huff)
            if not set(comp_quant) <= quant:
                raise BadImage("JPEG uses an undefined quantisation table")
            return end
        else:
            _check_misc(marker, seg)
        pos = end


def _walk_scans(data, pos, info, quant, huff, comp_ids):
    """Check the markers after the first scan (tables and scans of progressive files) up to EOI."""
    n = len(data)
    while True:
        match = _MARKER_RE.search(data, pos)
        if match is None:
            break
        mpos = match.start() + 1
        marker = data[mpos]
        if marker == 0xD9:
            return
        if marker == 0x01:
            pos = mpos + 1
            continue
        if marker not in _AFTER_SCAN_OK:
            raise BadImage(f"corrupt JPEG data (marker 0x{marker:02x} inside the image data)")
        if mpos + 3 > n:
            break
        length = (data[mpos + 1] << 8) | data[mpos + 2]
        end = mpos + 1 + length
        if length < 2 or end > n:
            raise BadImage("truncated or corrupt JPEG segment")
        seg = data[mpos + 3:end]
        if marker == 0xC4:
            _check_dht(seg, huff)
        elif marker == 0xDB:
            _check_dqt(seg, quant)
        elif marker == 0xDA:
            _check_sos(seg, info, comp_ids, huff)
        else:
            _check_misc(marker, seg)
        pos = end
    raise BadImage("truncated JPEG (no end-of-image marker)")


def inspect_jpeg(data):
    """Validate a JPEG's marker structure; return :class:`JpegInfo` or raise :class:`BadImage`.

    Checks the segment lengths, quantisation and Huffman tables, the frame and scan headers,
    that every quantisation table the frame uses is defined before the first scan, and that
    the file ends with an EOI marker after the scans (a truncated download has none).
    """
    info = JpegInfo()
    quant = set()
    huff = set()
    comp_ids = set()
    comp_quant = []
    pos = _walk_header(data, info, quant, huff, comp_ids, comp_quant)
    _walk_scans(data, pos, info, quant, huff, comp_ids)
    return info


def jpeg_fast_path_ok(info, large_pixels=None):
    """True when the C++ decoder gives the same RGB result as the careful path."""
    large = LARGE_IMAGE_PIXELS if large_pixels is None else large_pixels
    return (
        info.sof in _SOF_FAST
        and info.precision == 8
        and info.components in (1, 3)
        and not (info.components == 3 and info.adobe_transform == 0)  # stored as RGB, not YCbCr
        and info.orientation in (None, 0, 1)
        and info.height > 0
        and info.width * info.height <= large
    )


# ----------------------------------------------------------------------------------------------
# Pillow path

def _to_rgb_array(img):
    """Any Pillow mode -> HxWx3 uint8 (alpha dropped, 16-bit scaled, palette expanded)."""
    mode = img.mode
    if mode == "RGB":
        return np.asarray(img)
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(img)
        if mode.startswith("I;16"):
            arr = (arr.astype(np.uint32) >> 8).astype(np.uint8)
        elif mode == "I":
            arr = arr.astype(np.int64)
            arr = np.clip(arr >> 8 if arr.max(initial=0) > 255 else arr, 0, 255).astype(np.uint8)
        else:
            arr = arr.astype(np.float64)
            if np.nanmax(arr, initial=0.0) <= 1.0:
                arr = arr * 255.0
            arr = np.clip(np.nan_to_num(arr), 0, 255).round().astype(np.uint8)
        return np.repeat(arr[:, :, None], 3, axis=2)
    if mode in ("P", "PA"):
        img = img.convert("RGBA")
    elif mode == "LA":
        img = img.convert("L")
    return np.asarray(img.convert("RGB"))


def _shrink_target(width, height, limit):
    scale = (limit / float(width * height)) ** 0.5
    return max(1, int(width * scale)), max(1, int(height * scale))


def decode_with_pil(data, large_pixels=None, mode="RGB"):
    """Decode any image Pillow reads to an HxWx3 (mode 'RGB') or HxW (mode 'L') uint8 array.

    Applies the EXIF orientation, drops alpha, scales 16-bit samples, reduces images larger
    than ``large_pixels`` (JPEG while decoding, at 1/2 to 1/8 scale; other formats after a full
    decode). Images other than JPEG above ``MAX_NON_JPEG_PIXELS`` are refused from their header,
    before any decoding. Raises :class:`BadImage` with a reason for anything unreadable.
    """
    large = LARGE_IMAGE_PIXELS if large_pixels is None else large_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))  # reads the header only
            width, height = img.size
            is_jpeg = img.format in ("JPEG", "MPO")  # MPO: multi-picture JPEG, same decoder
            if not is_jpeg and width * height > MAX_NON_JPEG_PIXELS:
                raise BadImage(
                    f"{img.format or 'non-JPEG'} image too large to decode: {width}x{height} = "
                    f"{width * height / 1e6:.0f} MP, above the {MAX_NON_JPEG_PIXELS / 1e6:.0f} MP limit for "
                    f"images other than JPEG (they must be decoded in full before they can be reduced). "
                    f"Downscale the file, or convert it to JPEG")
            if is_jpeg and width * height > large:
                img.draft("RGB", _shrink_target(width, height, large))
            img.load()
            if getattr(img, "n_frames", 1) > 1:
                img.seek(0)
            try:
                img = ImageOps.exif_transpose(img)
            except Exception:  # a malformed EXIF block: keep the stored orientation
                pass
            if img.width * img.height > large:
                img = img.convert("RGB") if img.mode not in ("RGB", "L") else img
                img = img.resize(_shrink_target(img.width, img.height, large), Image.BILINEAR)
            arr = _to_rgb_array(img)
    except BadImage:
        raise
    except Image.DecompressionBombError as exc:
        raise BadImage(f"image too large ({exc})") from None
    except (OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError, TypeError,
            KeyError, ZeroDivisionError, MemoryError, Image.UnidentifiedImageError) as exc:
        msg = str(exc) or type(exc).__name__
        if isinstance(exc, Image.UnidentifiedImageError):
            msg = "not an image file Pillow can read"
        raise BadImage(msg) from None
    if arr.ndim != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise BadImage("empty image")
    if mode == "L":
        arr = np.asarray(Image.fromarray(arr).convert("L"))
    return np.ascontiguousarray(arr)


def encode_ppm(rgb):
    """HxWx3 uint8 -> binary PPM bytes (no compression, decodes at memcpy speed in C++)."""
    h, w = rgb.shape[:2]
    return b"P6\n%d %d\n255\n" % (w, h) + np.ascontiguousarray(rgb, dtype=np.uint8).tobytes()


PLACEHOLDER_PPM = encode_ppm(np.full((16, 16, 3), 128, np.uint8))


def prepare_encoded(data, large_pixels=None):
    """Bytes of one file -> bytes the C++ decoders accept and decode correctly to RGB.

    Returns the original bytes for ordinary JPEGs (fast path) and an RGB PPM for everything
    else. Raises :class:`BadImage` for unreadable files.
    """
    if not data:
        raise BadImage("empty file (0 bytes)")
    jpeg_problem = None
    if data[:3] == b"\xff\xd8\xff":
        try:
            info = inspect_jpeg(data)
        except BadImage as exc:
            # Let Pillow have the last word: it may still read what the C++ decoder would not.
            jpeg_problem = str(exc)
        else:
            if jpeg_fast_path_ok(info, large_pixels):
                return data
    try:
        return encode_ppm(decode_with_pil(data, large_pixels))
    except BadImage as exc:
        raise BadImage(jpeg_problem or str(exc)) from None


def read_file(path):
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise BadImage(f"cannot read file: {exc.strerror or exc}", transient=True) from None
