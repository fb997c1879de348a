"""Writes the hostile-input corpus (small files, deterministic) and kinds.json, what each must give.

    python BreastCADx/Testing/Data/bad/make_corpus.py       # from the repository root, with the test install

Every kind is one file (or folder) and the command it is given to; Testing/Python/test_hostile_inputs.py runs each
one and checks the exit code, that the message names the file and the cause, that there is no traceback, and that
nothing outside the output folder changed. Large inputs are small files whose header claims a large image.
"""

from __future__ import annotations

import gzip
import json
import shutil
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from PIL import Image as PILImage

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "Python"))
from dicom_factory import (  # noqa: E402
    mammogram_for_processing,
    no_pixels,
    sample_pixels,
    us,
    us_unsupported_syntax,
)

BUSI = HERE.parent / "busi"
US_IMAGE = "../busi/benign_004.png"  # a real ultrasound image, for the mask kinds
KINDS: dict[str, dict] = {}


def kind(name: str, words: list[str], command: str = "analyze", exit: int = 2, **extra) -> Path:
    KINDS[name] = {"command": command, "exit": exit, "words": words, **extra}
    return HERE / name


def png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose IHDR claims width x height, with one tiny IDAT (decoding would fail or explode)."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
                     + chunk(b"IEND", b""))


def us_ds(pixels: np.ndarray) -> pydicom.Dataset:
    from BreastCADxLib.io.dicom_write import ultrasound_dataset

    return ultrasound_dataset(pixels)


def save(ds: pydicom.Dataset, path: Path) -> None:
    ds.save_as(path, enforce_file_format=False)


def main() -> None:
    for p in HERE.iterdir():
        if p.name not in ("make_corpus.py", "README.md") and not p.name.startswith("fuzz_"):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    px = sample_pixels((160, 128))  # small real ultrasound pixels
    rng = np.random.default_rng(0)

    # --- not an image / broken files -----------------------------------------------------------------------
    kind("empty.png", ["file is empty"]).write_bytes(b"")
    kind("empty.dcm", ["file is empty"]).write_bytes(b"")
    good_png = (BUSI / "benign_004.png").read_bytes()
    kind("truncated.png", ["not a readable image"]).write_bytes(good_png[: len(good_png) // 3])
    kind("text_as.png", ["not a readable image"]).write_text("hello, I am not a picture\n")
    kind("html_as.jpg", ["not a readable image"]).write_text("<html><body>404</body></html>\n")
    kind("random_bytes.dcm", ["dicom"]).write_bytes(rng.integers(0, 256, 4000, dtype=np.uint8).tobytes())
    kind("preamble_only.dcm", ["dicom"]).write_bytes(b"\x00" * 128 + b"DICM")
    kind("zip_as.nrrd", ["not a readable"]).write_bytes(b"PK\x03\x04" + b"\x00" * 200)
    kind("unknown_suffix.xyz", ["unsupported file type"]).write_bytes(b"\x00" * 100)
    kind("no_suffix", ["unsupported file type"]).write_bytes(b"abc" * 100)
    kind("picture.gif", ["unsupported file type"]).write_bytes(b"GIF89a" + b"\x00" * 64)
    kind("missing.png", ["no such file"])  # never written
    kind("empty_folder", ["no readable dicom"], empty_dir=True).mkdir()  # git keeps no empty folder: the test makes it
    folder = kind("text_folder", ["no readable dicom"])
    folder.mkdir()
    for i in range(3):
        (folder / f"note{i}.txt").write_text("not dicom")

    # --- DICOM that is valid but unusable --------------------------------------------------------------------
    no_pixels(kind("sr_no_pixels.dcm", ["no pixel data"]))
    us_unsupported_syntax(kind("mpeg2_syntax.dcm", ["transfer syntax"]), px)
    ds = us_ds(px)
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    save(ds, kind("truncated_pixels.dcm", ["pixel data"]))
    ds = us_ds(px)
    ds.Rows = 0
    save(ds, kind("rows_zero.dcm", ["invalid image header"]))
    ds = us_ds(px)
    ds.PhotometricInterpretation = "FOOBAR"
    save(ds, kind("photometric_unknown.dcm", ["photometric"]))
    ds = us_ds(px)
    ds.SamplesPerPixel = 4
    save(ds, kind("samples_per_pixel_4.dcm", ["invalid image header"]))
    ds = us_ds(px)
    ds.BitsAllocated = 12
    save(ds, kind("bits_allocated_12.dcm", ["invalid image header"]))
    ds = us_ds(px)
    ds.NumberOfFrames = 10
    save(ds, kind("frames_claimed_10.dcm", ["pixel data"]))
    ds = us_ds(np.stack([px] * 3))  # a 3-frame cine whose header claims 100,000 frames
    ds.NumberOfFrames = 100000
    save(ds, kind("frames_claimed_100000.dcm", ["claims 100,000 frames", "false header"]))
    ds = us_ds(px)
    ds.Rows, ds.Columns = 60000, 60000
    save(ds, kind("header_60000_squared.dcm", ["exceeds the limit"]))
    for name, spacing in (("spacing_zero.dcm", [0, 0]), ("spacing_negative.dcm", [-0.1, -0.1]),
                          ("spacing_nan.dcm", ["NaN", "NaN"])):
        ds = us_ds(sample_pixels(None))
        del ds.SequenceOfUltrasoundRegions
        ds.PixelSpacing = spacing
        save(ds, kind(name, ["pixel spacing"]))
    for name, delta in (("physical_delta_zero.dcm", 0.0), ("physical_delta_negative.dcm", -0.01)):
        ds = us_ds(sample_pixels(None))  # a calibrated (cm) region whose scale is 0 or below
        region = ds.SequenceOfUltrasoundRegions[0]
        region.PhysicalUnitsXDirection = region.PhysicalUnitsYDirection = 3  # cm
        region.PhysicalDeltaX, region.PhysicalDeltaY = delta, 0.01
        save(ds, kind(name, ["pixel spacing", "physicaldelta", "not positive"]))
    us(kind("blank.dcm", ["blank"]), np.zeros((457, 557), np.uint8))
    us(kind("constant_200.dcm", ["blank"]), np.full((457, 557), 200, np.uint8))
    mammogram_for_processing(kind("mammogram.dcm", ["mammography (mg)", "no model for this modality"]),
                             (rng.random((600, 480)) * 4000).astype(np.uint16))
    for modality, words in (("MR", ["mri (mr)"]), ("CT", ["ct (ct)"]), ("XA", ["angiography"])):
        ds = us_ds(sample_pixels(None))
        ds.Modality = modality
        save(ds, kind(f"modality_{modality.lower()}.dcm", words + ["no model for this modality"]))
    us(kind("noise.dcm", ["does not look like the breast ultrasound"]),
       rng.integers(0, 256, (457, 557), dtype=np.uint8))
    us(kind("tiny_40x30.dcm", ["pixels: outside"]), sample_pixels((40, 30)))

    # --- rasters --------------------------------------------------------------------------------------------
    PILImage.fromarray(np.zeros((400, 500), np.uint8)).save(kind("black.png", ["blank"]))
    PILImage.fromarray(np.full((400, 500), 65535, np.uint16)).save(kind("white16.png", ["blank"]))
    PILImage.fromarray(np.zeros((400, 500, 4), np.uint8), "RGBA").save(kind("transparent.png", ["blank"]))
    PILImage.fromarray(np.zeros((400, 500), np.uint8)).save(kind("black.bmp", ["blank"]))
    PILImage.fromarray(np.full((1, 1), 128, np.uint8)).save(kind("one_pixel.png", ["blank"]))
    PILImage.fromarray(np.asarray(PILImage.open(BUSI / "benign_004.png").convert("L").resize((12, 10)))).save(
        kind("tiny_12x10.png", ["pixels: outside"]))
    png_header_only(kind("claims_30000_squared.png", ["exceeds the limit"]), 30000, 30000)
    png_header_only(kind("claims_12000_squared.png", ["exceeds the limit"]), 12000, 12000)
    png_header_only(kind("claims_1x200000.png", ["exceeds the limit"]), 1, 200_000_000)
    rgb = np.asarray(PILImage.open(BUSI / "benign_004.png").convert("RGB"))
    jpg = HERE / "tmp.jpg"
    PILImage.fromarray(rgb).save(jpg, quality=80)
    kind("truncated.jpg", ["not a readable image"]).write_bytes(jpg.read_bytes()[:600])
    data = bytearray(jpg.read_bytes())
    data[2:40] = b"\xff" * 38
    kind("corrupt_header.jpg", ["not a readable image"]).write_bytes(bytes(data))
    jpg.unlink()
    tif = kind("float_nan.tiff", ["nan or infinite"])
    PILImage.fromarray(np.full((300, 400), np.nan, np.float32)).save(tif)
    kind("corrupt.tif", ["not a readable image"]).write_bytes(b"II*\x00" + b"\xff" * 100)
    grad = np.tile(np.linspace(0, 255, 560), (480, 1)).astype(np.uint8)
    PILImage.fromarray(grad).save(kind("gradient.png", ["does not look like the breast ultrasound"]))
    checker = ((np.indices((480, 560)) // 40).sum(0) % 2 * 255).astype(np.uint8)
    PILImage.fromarray(checker).save(kind("checkerboard.png", ["does not look like the breast ultrasound"]))
    PILImage.fromarray(rng.integers(0, 256, (480, 560), dtype=np.uint8)).save(
        kind("noise.png", ["does not look like the breast ultrasound"]))
    doppler = np.asarray(PILImage.open(BUSI / "benign_004.png").convert("RGB")).copy()
    dh, dw = doppler.shape[:2]
    box = doppler[dh // 4:dh // 2, dw // 3:2 * dw // 3]  # a colour-Doppler box: red and blue flow over the B-mode
    flow = rng.random(box.shape[:2]) < 0.35
    box[flow & (rng.random(box.shape[:2]) < 0.5)] = (220, 30, 30)
    box[flow & (box[..., 1] != 30)] = (30, 60, 230)
    PILImage.fromarray(doppler).save(kind("colour_doppler.png", ["coloured", "colour doppler"]))
    upright = np.asarray(PILImage.open(BUSI / "benign_004.png").convert("L"))
    PILImage.fromarray(np.ascontiguousarray(np.rot90(upright))).save(kind("turned_90.png", ["turned by 90"]))
    PILImage.fromarray(255 - upright).save(kind("inverted.png", ["inverted"]))
    # upside down: a lesion image's depth score lies in the flag band (analysed, flagged), a normal one's below
    # every genuine image's (refused)
    PILImage.fromarray(np.ascontiguousarray(upright[::-1])).save(
        kind("upside_down.png", [], exit=0, flag="orientation_uncertain"))
    normal = np.asarray(PILImage.open(BUSI / "normal_003.png").convert("L"))
    PILImage.fromarray(np.ascontiguousarray(normal[::-1])).save(kind("upside_down_normal.png", ["upside down"]))
    ds = us_ds(upright)  # bright-tissue pixels under a MONOCHROME1 label: read as a negative
    ds.PhotometricInterpretation = "MONOCHROME1"
    save(ds, kind("monochrome1_on_bright_tissue.dcm", ["inverted", "monochrome1"]))
    grey = sample_pixels(None)  # grey samples stored as three equal channels under a YBR_FULL label
    ds = us_ds(grey)
    ds.SamplesPerPixel, ds.PlanarConfiguration, ds.PhotometricInterpretation = 3, 0, "YBR_FULL"
    ds.PixelData = np.repeat(grey[..., None], 3, axis=-1).tobytes()
    save(ds, kind("ybr_label_grey_samples.dcm", [], exit=0, flag="input_corrected"))

    # --- ITK formats ------------------------------------------------------------------------------------------
    sitk.WriteImage(sitk.GetImageFromArray(np.full((60, 80), np.nan, np.float32)), str(kind("nan.nrrd", ["nan"])))
    sitk.WriteImage(sitk.GetImageFromArray(np.full((300, 400), np.inf, np.float32)), str(kind("inf.nrrd", ["nan"])))
    kind("header_only.nhdr", ["not a readable"]).write_text(
        "NRRD0004\ntype: uint8\ndimension: 2\nsizes: 400 300\nencoding: raw\ndata file: missing.raw\n\n")
    kind("bad_header.nrrd", ["not a readable"]).write_text("NRRD0004\ntype: banana\ndimension: two\n\n")
    kind("claims_huge.mha", ["exceeds the limit"]).write_text(
        "ObjectType = Image\nNDims = 3\nDimSize = 5000 5000 5000\nElementType = MET_UCHAR\nElementDataFile = LOCAL\n")
    nii = HERE / "tmp.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(sample_pixels((160, 128)).astype(np.uint8)), str(nii))
    kind("truncated.nii.gz", ["not a readable"]).write_bytes(gzip.compress(gzip.decompress(nii.read_bytes())[:200]))
    nii.unlink()
    vol = sitk.GetImageFromArray(rng.integers(0, 255, (4, 3, 60, 80)).astype(np.uint8), isVector=False)
    sitk.WriteImage(vol, str(kind("four_d.nrrd", ["4"])))

    # --- masks (given to analyze with a real ultrasound image) ------------------------------------------------
    h, w = np.asarray(PILImage.open(BUSI / "benign_004.png")).shape[:2]
    PILImage.fromarray(np.zeros((100, 100), np.uint8)).save(kind("mask_wrong_size.png", ["does not match"],
                                                                  "analyze-mask"))
    PILImage.fromarray(np.zeros((h, w), np.uint8)).save(kind("mask_empty.png", ["empty"], "analyze-mask"))
    PILImage.fromarray(np.tile(np.arange(w) % 256, (h, 1)).astype(np.uint8)).save(
        kind("mask_grey_levels.png", ["binary"], "analyze-mask"))
    line = np.zeros((h, w), np.uint8)
    line[h // 2, 20:w - 20] = 255
    PILImage.fromarray(line).save(kind("mask_one_pixel_line.png", ["one pixel thick"], "analyze-mask"))
    dot = np.zeros((h, w), np.uint8)
    dot[h // 2:h // 2 + 2, w // 2:w // 2 + 2] = 255
    PILImage.fromarray(dot).save(kind("mask_4_pixels.png", ["pixels"], "analyze-mask"))
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((h, w), np.uint8)),
                    str(kind("mask_whole_image.nrrd", ["covers 100 %"], "analyze-mask")))
    kind("mask_truncated.png", ["not a readable image"], "analyze-mask").write_bytes(good_png[:500])
    labels = np.ones((h, w), np.uint8)
    labels[h // 3:h // 2, w // 3:w // 2] = 2  # a label map: background 1, lesion 2
    sitk.WriteImage(sitk.GetImageFromArray(labels), str(kind("mask_label_map_1_2.nrrd", ["label map", "no 0"],
                                                             "analyze-mask")))

    # --- batch manifests ---------------------------------------------------------------------------------------
    kind("manifest_no_columns.csv", ["case_id,image"], "batch").write_text("id,path\n1,x.png\n")
    kind("manifest_short_row.csv", ["line 3", "fewer cells"], "batch").write_text(
        f"case_id,image,mask\na,{US_IMAGE},\nb\n")
    kind("manifest_long_row.csv", ["line 2", "more cells"], "batch").write_text(
        f"case_id,image\na,{US_IMAGE},extra\n")
    kind("manifest_empty_image.csv", ["line 2", "image cell is empty"], "batch").write_text("case_id,image\na,\n")
    kind("manifest_reserved_id.csv", ["line 2", "results.csv"], "batch").write_text(
        f"case_id,image\nresults.csv,{US_IMAGE}\n")
    kind("manifest_traversal_id.csv", ["line 2", "folder name"], "batch").write_text(
        f"case_id,image\n../escape,{US_IMAGE}\n")
    kind("manifest_long_id.csv", ["line 2", "1-100"], "batch").write_text(f"case_id,image\n{'a' * 300},{US_IMAGE}\n")
    kind("manifest_duplicate_ids.csv", ["unique"], "batch").write_text(
        f"case_id,image\na,{US_IMAGE}\na,{US_IMAGE}\n")
    kind("manifest_latin1.csv", ["cannot be read"], "batch").write_bytes(
        "case_id,image\ncafé,x.png\n".encode("latin-1"))
    kind("manifest_empty.csv", ["case_id,image"], "batch").write_text("")
    kind("manifest_missing_image.csv", [], "batch", exit=1, row_error="not found").write_text(
        "case_id,image\nghost,does_not_exist.png\n")
    kind("manifest_bom.csv", [], "batch", exit=0).write_bytes(
        b"\xef\xbb\xbf" + f"case_id,image,mask\nbom,{US_IMAGE},../busi/benign_004_mask.png\n".encode())

    # --- regressions found by fuzzing (benchmarks/fuzz/): committed as found, never regenerated ------------------
    found = {"fuzz_dicom_oom_mpeg2.dcm": ["not supported"],  # 4.3 GB in GDCM before the fix
             "fuzz_dicom_meta_length_sq.dcm": ["corrupt dicom file meta", "(0002,0000)"]}  # 11 GB in pydicom
    for p in sorted(HERE.glob("fuzz_*")):
        kind(p.name, found.get(p.name, ["corrupt"] if p.suffix == ".dcm" else ["not a readable"]))

    (HERE / "kinds.json").write_text(json.dumps(KINDS, indent=1) + "\n")
    print(f"{len(KINDS)} kinds -> {HERE}")


if __name__ == "__main__":
    main()
