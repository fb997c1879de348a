"""DICOM results: lesion SEG and TID 1500 Measurement Report SR (highdicom), and reading them back.

Patient, study and frame-of-reference attributes come from the source images (never invented); the SEG
references every source instance it covers; the SR references the SEG segment and the source image.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes

from BreastCADxLib import RESULT_SERIES_PREFIX, __version__
from BreastCADxLib.analysis.result import AnalysisResult, ModelRef, Provenance
from BreastCADxLib.errors import BreastCADxError
from BreastCADxLib.image import Image
from BreastCADxLib.io.atomic import write_atomic

MANUFACTURER = "BreastCADx project"
MODEL_NAME = "BreastCADx"
SEG_SERIES_NUMBER = 9101
SR_SERIES_NUMBER = 9102
PRIVATE_SCHEME = "99BCADX"  # our own codes (BI-RADS-style suggestion values); see coding scheme identification
RADIOMICS_SCHEME = "99PYRADIOMICS"  # pyradiomics feature names, as dcmqi writes them
LESION_CATEGORY = codes.SCT.MorphologicallyAbnormalStructure
LESION_TYPE = codes.SCT.Mass
BREAST = codes.SCT.Breast
SUGGESTION_TEXT = ("BI-RADS-style category suggested by an algorithm from its malignancy probability; "
                   "not a radiologist's assessment. Research use only, not for diagnosis.")
_UNITLESS = hd.sr.CodedConcept("1", "UCUM", "no units")
_PROCEDURES = {
    "US": hd.sr.CodedConcept("16310003", "SCT", "Diagnostic ultrasonography"),
    "MG": hd.sr.CodedConcept("71651007", "SCT", "Mammography"),
    "MR": hd.sr.CodedConcept("241615005", "SCT", "MRI of breast"),
}
_IMAGING = hd.sr.CodedConcept("363679005", "SCT", "Imaging procedure")


class DicomExportError(BreastCADxError):
    """The results cannot be written as DICOM (no DICOM source, empty mask, unusable source)."""

    code = "dicom_export"


@dataclass
class ModelInfo:
    name: str
    version: str
    sha256: str

    def algorithm(self) -> hd.AlgorithmIdentificationSequence:
        return hd.AlgorithmIdentificationSequence(
            name=self.name, version=self.version, family=codes.cid7162.ArtificialIntelligence,
            parameters={"model_sha256": self.sha256})

    def sr_algorithm(self) -> hd.sr.AlgorithmIdentification:
        return hd.sr.AlgorithmIdentification(name=self.name, version=self.version,
                                             parameters=[f"model_sha256={self.sha256}"])


def source_datasets(image: Image, notes: list[str] | None = None) -> list[pydicom.Dataset]:
    """The headers of the DICOM instances behind the image's frames, in frame order (SEG and SR reference
    them; their pixels are not needed), with text values made valid for what we copy from them (`notes` gets
    what was changed)."""
    if not image.source_files:
        raise DicomExportError("DICOM SEG/SR need an image loaded from DICOM (this one has no DICOM source)",
                               image.source)
    from BreastCADxLib.io.dicom import read_datasets

    sources = read_datasets(image.source_files, pixels=False)
    changes = valid_text_values(sources)
    if notes is not None:
        notes.extend(changes)
    return sources


TEXT_VRS = ("AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UT")


def _decode(raw: bytes) -> tuple[str, str | None]:
    for codec, charset in (("ascii", None), ("utf-8", "UTF-8"), ("latin-1", "ISO 8859-1 (Latin-1)")):
        try:
            return raw.decode(codec), charset
        except UnicodeDecodeError:
            continue
    return raw.decode("latin-1"), "ISO 8859-1 (Latin-1)"


def valid_text_values(sources: list[pydicom.Dataset]) -> list[str]:
    """Make the top-level text values of the source headers valid DICOM, in place: bytes that the header's
    character set does not declare are re-read (UTF-8, else Latin-1) and the set becomes UTF-8 (ISO_IR 192);
    values longer than their VR allows are cut. Returns what was changed, one line each (said to the user)."""
    from pydicom.valuerep import MAX_VALUE_LEN

    changes: list[str] = []
    for ds in sources:
        declared = ds.get("SpecificCharacterSet")
        unicode_needed = False
        for elem in list(ds):
            if elem.VR not in TEXT_VRS or elem.VM != 1 or elem.value is None or elem.tag == 0x00080005:
                continue
            raw = getattr(elem.value, "original_string", None)
            undeclared = isinstance(raw, bytes) and not declared and any(b > 127 for b in raw)
            text = str(elem.value)
            if undeclared:
                text, charset = _decode(raw)
                changes.append(f"{elem.keyword or elem.tag}: no character set declared; read as {charset}")
            limit = MAX_VALUE_LEN.get(elem.VR, 0)
            if elem.VR == "PN":
                limit = 64 * 3 + 2  # 64 per component group (alphabetic, ideographic, phonetic)
                parts = text.split("=")
                cut = "=".join(p[:64] for p in parts[:3])
            else:
                cut = text[:limit] if limit else text
            if cut != text:
                changes.append(f"{elem.keyword or elem.tag}: {len(text)} characters, more than {elem.VR} allows; "
                               f"cut to {len(cut)}")
            if cut != str(elem.value) or undeclared:
                ds[elem.tag].value = cut
            unicode_needed |= any(ord(c) > 127 for c in cut)
        if unicode_needed and not declared:
            ds.SpecificCharacterSet = "ISO_IR 192"
    return sorted(set(changes))


def _frames_layout(image: Image, sources: list[pydicom.Dataset]) -> str:
    if len(sources) == 1 and int(sources[0].get("NumberOfFrames", 1) or 1) == image.frames:
        return "multiframe" if image.frames > 1 else "single"
    if len(sources) == image.frames:
        return "series"
    raise DicomExportError(f"{len(sources)} source files do not match the image's {image.frames} frames",
                           image.source)


SEG_ALGORITHM_TYPES = {  # result.MASK_ORIGINS -> SEG algorithm type
    "auto": hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
    "edited": hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC,  # automatic, then corrected by the user
    "user": hd.seg.SegmentAlgorithmTypeValues.MANUAL,  # drawn or supplied by the user
}


def build_seg(image: Image, mask: np.ndarray, model: ModelInfo | None, origin: str = "auto",
              sources: list[pydicom.Dataset] | None = None) -> hd.seg.Segmentation:
    """Binary DICOM SEG of the lesion mask on the source grid; `origin` is auto, edited or user."""
    if origin not in SEG_ALGORITHM_TYPES:
        raise ValueError(f"origin must be one of {sorted(SEG_ALGORITHM_TYPES)}")
    if model is None and origin != "user":
        raise ValueError("an automatic or edited mask needs the segmenter that made it")
    sources = sources or source_datasets(image)
    layout = _frames_layout(image, sources)
    src = sources[0]
    in_patient_space = "FrameOfReferenceUID" in src and (
        "ImageOrientationPatient" in src or "SharedFunctionalGroupsSequence" in src)
    if layout == "multiframe" and not in_patient_space:
        raise DicomExportError(
            f"the source is a {image.frames}-frame image without patient coordinates (e.g. an ultrasound cine); "
            "a DICOM SEG can reference such a source only as a single frame: export a single-frame image",
            image.source)
    mask = np.asarray(mask).astype(bool).reshape(image.array.shape)
    if not mask.any():
        raise DicomExportError("the lesion mask is empty: there is nothing to export as a segmentation",
                               image.source)
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="Breast lesion",
        segmented_property_category=LESION_CATEGORY,
        segmented_property_type=LESION_TYPE,
        anatomic_regions=[BREAST],
        algorithm_type=SEG_ALGORITHM_TYPES[origin],
        algorithm_identification=model.algorithm() if origin != "user" and model is not None else None,
        tracking_uid=hd.UID(),
        tracking_id="Lesion 1",
    )
    try:
        seg = _segmentation(sources, mask, description, origin)
    except ValueError as e:  # highdicom's checks of the source
        raise DicomExportError(f"cannot build a DICOM SEG for this source: {e}", image.source) from None
    if "ImageOrientationPatient" not in seg and "SharedFunctionalGroupsSequence" in seg:
        # General Image module, type 2C when there is no patient orientation (e.g. ultrasound)
        seg.PatientOrientation = src.get("PatientOrientation", "")
    return seg


def _segmentation(sources: list[pydicom.Dataset], mask: np.ndarray, description: hd.seg.SegmentDescription,
                  origin: str) -> hd.seg.Segmentation:
    return hd.seg.Segmentation(
        source_images=sources,
        pixel_array=mask.astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description],
        series_instance_uid=hd.UID(),
        series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=MODEL_NAME,
        software_versions=__version__,
        device_serial_number="0",
        series_description=f"{RESULT_SERIES_PREFIX} lesion segmentation",
        content_label="LESION",
        content_description={"auto": "Breast lesion (automatic)", "edited": "Breast lesion (automatic, edited)",
                             "user": "Breast lesion (user mask)"}[origin],
    )


def _dcm(value: str, meaning: str) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(value, "DCM", meaning)


# lexicon feature -> concept name; category -> standard code where DICOM / SNOMED CT has one (CID 6152-6155),
# else our own code (99BCADX) with the lexicon's words
LEXICON_CONCEPTS = {
    "shape": hd.sr.CodedConcept("300842002", "SCT", "Shape"),
    "orientation": _dcm("111354", "Orientation"),
    "margin": _dcm("111037", "Margins"),
    "echo pattern": _dcm("111360", "Echo pattern"),
    "posterior features": _dcm("111366", "Posterior acoustic features"),
}
LEXICON_VALUES = {
    "irregular": hd.sr.CodedConcept("49608001", "SCT", "Irregular"),
    "round": hd.sr.CodedConcept("42700002", "SCT", "Round"),
    "parallel": _dcm("111355", "Parallel"),
    "not parallel": _dcm("111356", "Not parallel"),
    "circumscribed": hd.sr.CodedConcept("263706005", "SCT", "Circumscribed"),
    "anechoic": _dcm("111361", "Anechoic"),
    "hyperechoic": _dcm("111362", "Hyperechoic"),
    "hypoechoic": _dcm("111364", "Hypoechoic"),
    "isoechoic": _dcm("111365", "Isoechoic"),
    "no posterior features": _dcm("111367", "No posterior acoustic features"),
    "enhancement": _dcm("111368", "Posterior enhancement"),
    "shadowing": _dcm("111369", "Posterior shadowing"),
}


def _lexicon_evaluations(result: AnalysisResult) -> list[hd.sr.QualitativeEvaluation]:
    out = []
    for item in result.lexicon:
        if item.feature not in LEXICON_CONCEPTS:
            continue
        base = item.category.split(":")[0]
        value = LEXICON_VALUES.get(base) or hd.sr.CodedConcept(
            base.upper().replace(" ", "-")[:16], PRIVATE_SCHEME, item.category[:64])
        out.append(hd.sr.QualitativeEvaluation(name=LEXICON_CONCEPTS[item.feature], value=value))
    return out


def _num(name: hd.sr.CodedConcept, value: float, unit: hd.sr.CodedConcept,
         algorithm: hd.sr.AlgorithmIdentification | None = None) -> hd.sr.Measurement:
    return hd.sr.Measurement(name=name, value=float(value), unit=unit, algorithm_id=algorithm)


def _length_unit(image: Image) -> tuple[hd.sr.CodedConcept, hd.sr.CodedConcept]:
    if image.spacing_known:
        return hd.sr.CodedConcept("mm", "UCUM", "millimeter"), hd.sr.CodedConcept("mm2", "UCUM", "square millimeter")
    pixels = hd.sr.CodedConcept("{pixels}", "UCUM", "pixels")  # no calibration: counted in pixels, labelled so
    return pixels, pixels


def build_sr(image: Image, seg: hd.seg.Segmentation, result: AnalysisResult, classifier: ModelInfo,
             sources: list[pydicom.Dataset] | None = None, top_k: int = 8) -> hd.sr.Comprehensive3DSR:
    """TID 1500 Measurement Report: lesion size, probability, BI-RADS-style suggestion, selected features."""
    sources = sources or source_datasets(image)
    if result.prediction is None:
        raise DicomExportError("no lesion was classified: there is no result to report", image.source)
    algorithm = classifier.sr_algorithm()
    length, area = _length_unit(image)
    meas = result.measurements
    items = [_num(codes.SCT.Area, meas.get("area", 0.0), area)]
    if meas.get("longest_diameter") is not None:
        items.append(_num(codes.SCT.LongAxis, meas["longest_diameter"], length))
    items.append(_num(codes.DCM.ProbabilityOfCancer, result.prediction.probability, _UNITLESS, algorithm))
    for f in result.prediction.top_features[:top_k]:
        name, value = f["feature"], f.get("value")
        if value is None or not np.isfinite(value):
            continue
        items.append(_num(hd.sr.CodedConcept(name, RADIOMICS_SCHEME, name[:64]), value, _UNITLESS, algorithm))
    birads = result.prediction.birads or "unknown"
    evaluation = hd.sr.QualitativeEvaluation(
        name=codes.DCM.AssessmentCategory,
        value=hd.sr.CodedConcept(f"BIRADS-{birads}", PRIVATE_SCHEME,
                                 f"BI-RADS-style {birads} (algorithm suggestion)"),
    )
    # built by hand: highdicom's from_segmentation misses the shared segment identification of 1-frame SEGs
    if image.frames == 1:
        group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="Lesion 1"),
            referenced_segment=hd.sr.ReferencedSegmentationFrame(
                sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID, frame_number=1,
                segment_number=1, source_image=hd.sr.SourceImageForSegmentation(
                    sources[0].SOPClassUID, sources[0].SOPInstanceUID)),
            finding_type=LESION_TYPE, finding_category=LESION_CATEGORY, finding_sites=[hd.sr.FindingSite(BREAST)],
            measurements=items, qualitative_evaluations=[evaluation, *_lexicon_evaluations(result)],
            algorithm_id=algorithm)
    else:
        group = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="Lesion 1"),
            referenced_segment=hd.sr.ReferencedSegment(
                sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID, segment_number=1,
                source_series=hd.sr.SourceSeriesForSegmentation(sources[0].SeriesInstanceUID)),
            finding_type=LESION_TYPE, finding_category=LESION_CATEGORY, finding_sites=[hd.sr.FindingSite(BREAST)],
            measurements=items, qualitative_evaluations=[evaluation, *_lexicon_evaluations(result)],
            algorithm_id=algorithm)
    _drop_frame_number_beside_segment(group[0])
    group[0].ContentSequence.append(hd.sr.TextContentItem(
        name=codes.DCM.Comment, value=SUGGESTION_TEXT, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS))
    for item in result.lexicon:  # the measured quantity and confidence behind each category
        group[0].ContentSequence.append(hd.sr.TextContentItem(
            name=codes.DCM.Comment, value=f"Lexicon {item.feature}: {item.category} ({item.evidence}; confidence "
                                         f"{item.confidence})"[:1024],
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS))
    for line in result.site_lines():  # the site profile and the radiologist's category, when given
        group[0].ContentSequence.append(hd.sr.TextContentItem(
            name=codes.DCM.Comment, value=line[:1024], relationship_type=hd.sr.RelationshipTypeValues.CONTAINS))
    for flag in result.flags:  # every caution the reader must see, as the result carries it
        group[0].ContentSequence.append(hd.sr.TextContentItem(
            name=codes.DCM.Comment, value=f"Flag {flag.code}: {flag.text}"[:1024],
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS))
    observer = hd.sr.ObserverContext(
        observer_type=codes.cid270.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name=MODEL_NAME, manufacturer_name=MANUFACTURER, model_name=classifier.name))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=_PROCEDURES.get(image.modality, _IMAGING),
        imaging_measurements=[group],
        title=codes.cid7021.ImagingMeasurementReport,
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=[*sources, seg],
        content=report[0],
        series_instance_uid=hd.UID(),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        series_description=f"{RESULT_SERIES_PREFIX} lesion report (research use only)",
        is_complete=True,
        is_final=False,  # an algorithm's preliminary result, to be verified by a radiologist
    )
    schemes = []
    for designator, name, org in ((PRIVATE_SCHEME, "BreastCADx local codes", MANUFACTURER),
                                  (RADIOMICS_SCHEME, "pyradiomics feature names", "pyradiomics")):
        scheme = pydicom.Dataset()
        scheme.CodingSchemeDesignator = designator
        scheme.CodingSchemeName = name
        scheme.CodingSchemeResponsibleOrganization = org
        schemes.append(scheme)
    sr.CodingSchemeIdentificationSequence = schemes
    return sr


def _drop_frame_number_beside_segment(item: pydicom.Dataset) -> None:
    """A SEG reference names the segment, not a frame (PS3.3 C.18.3.1; dciodvfy checks it)."""
    for child in item.get("ContentSequence", []):
        for ref in child.get("ReferencedSOPSequence", []):
            if "ReferencedSegmentNumber" in ref and "ReferencedFrameNumber" in ref:
                del ref.ReferencedFrameNumber
        _drop_frame_number_beside_segment(child)


def _code(item: pydicom.Dataset) -> str:
    return str(item.get("CodeValue") or item.get("LongCodeValue") or item.get("URNCodeValue") or "")


def model_infos(provenance: Provenance) -> tuple[ModelInfo | None, ModelInfo]:
    """Segmenter (None when the user drew the mask) and classifier as the DICOM objects name them."""
    def info(ref: ModelRef) -> ModelInfo:
        return ModelInfo(f"BreastCADx {ref.id}", provenance.breastcadx, ref.sha256)

    return (info(provenance.segmenter) if provenance.segmenter else None), info(provenance.classifier)


SC_SERIES_NUMBER = 9103
RESULT_FILES = {"seg": "seg.dcm", "sr": "sr.dcm", "overlay": "overlay.dcm"}


def check_writable(out_dir: Path, kinds=tuple(RESULT_FILES)) -> dict[str, Path]:
    """Target paths of the results; refuses when one exists (checked before anything is computed or written)."""
    paths = {k: Path(out_dir) / RESULT_FILES[k] for k in kinds}
    for p in paths.values():
        if os.path.lexists(p):
            raise DicomExportError("will not overwrite an existing DICOM result", p)
    return paths


def build_overlay_sc(rgb: np.ndarray, sources: list[pydicom.Dataset]) -> pydicom.Dataset:
    """The result overlay (image, lesion contour, Grad-CAM, probability text) as a Secondary Capture image,
    so any PACS viewer shows it; burned-in text is declared."""
    rgb = np.ascontiguousarray(np.asarray(rgb, np.uint8)[..., :3])
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=sources[0], pixel_array=rgb, photometric_interpretation="RGB", bits_allocated=8,
        coordinate_system="PATIENT", series_instance_uid=hd.UID(), series_number=SC_SERIES_NUMBER,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer=MANUFACTURER,
        patient_orientation=("A", "F"))  # placeholder highdicom insists on; replaced below
    sc.PatientOrientation = sources[0].get("PatientOrientation", "")  # type 2: empty when unknown, not invented
    sc.Laterality = sources[0].get("Laterality", "")  # breast is paired: copied from the source, never guessed
    sc.SeriesDescription = f"{RESULT_SERIES_PREFIX} result overlay (research use only)"
    sc.BurnedInAnnotation = "YES"
    sc.ImageType = ["DERIVED", "SECONDARY"]
    sc.DerivationDescription = "lesion contour, Grad-CAM heatmap and malignancy probability over the source image"
    return sc


def build_dicom_results(result: AnalysisResult, image: Image, overlay_rgb: np.ndarray | None = None,
                        notes: list[str] | None = None) -> dict[str, pydicom.Dataset]:
    """SEG and SR of the result's mask and numbers (and the overlay as a Secondary Capture when given); the
    algorithm identification and the SEG algorithm type come from the result's provenance. Source values that
    were invalid DICOM are made valid; `notes` gets what was changed."""
    if result.mask is None:
        raise DicomExportError("the result carries no mask to export", image.source)
    segmenter, classifier = model_infos(result.provenance)
    sources = source_datasets(image, notes)
    seg = build_seg(image, result.mask, segmenter, origin=result.mask_origin, sources=sources)
    objects = {"seg": seg, "sr": build_sr(image, seg, result, classifier, sources=sources)}
    if overlay_rgb is not None:
        objects["overlay"] = build_overlay_sc(overlay_rgb, sources)
    charset = sources[0].get("SpecificCharacterSet")
    for ds in objects.values():  # the copied patient / study values keep their (now declared) character set
        if charset and not ds.get("SpecificCharacterSet"):
            ds.SpecificCharacterSet = charset
    return objects


def save_dicom_results(objects: dict[str, pydicom.Dataset], out_dir: Path) -> dict[str, Path]:
    """seg.dcm, sr.dcm, overlay.dcm into out_dir; refuses before writing anything when one exists."""
    paths = check_writable(out_dir, tuple(objects))
    for k, ds in objects.items():
        write_atomic(paths[k], lambda tmp, ds=ds: ds.save_as(tmp, enforce_file_format=True))
    return paths


def read_seg_mask(seg: pydicom.Dataset | Path, image: Image) -> np.ndarray:
    """The SEG's first segment as a bool mask on the image's grid (frames of the source in order)."""
    seg = hd.seg.segread(seg) if isinstance(seg, (str, Path)) else hd.seg.Segmentation.from_dataset(seg)
    sources = source_datasets(image)
    layout = _frames_layout(image, sources)
    if layout == "multiframe":
        arr = seg.get_pixels_by_source_frame(
            source_sop_instance_uid=sources[0].SOPInstanceUID,
            source_frame_numbers=list(range(1, image.frames + 1)), segment_numbers=[1],
            assert_missing_frames_are_empty=True)
    else:
        arr = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=[s.SOPInstanceUID for s in sources], segment_numbers=[1],
            assert_missing_frames_are_empty=True)
    return np.asarray(arr)[..., 0].astype(bool).reshape(image.array.shape)


def read_sr_summary(sr: pydicom.Dataset | Path) -> dict:
    """Numbers and codes of our SR: probability, suggestion, measurements (name -> (value, unit))."""
    ds = pydicom.dcmread(sr) if isinstance(sr, (str, Path)) else sr
    out: dict = {"measurements": {}, "probability": None, "birads_suggestion": None, "text": []}

    def walk(items) -> None:
        for item in items:
            name = item.ConceptNameCodeSequence[0].CodeMeaning if "ConceptNameCodeSequence" in item else ""
            if item.ValueType == "NUM":
                mv = item.MeasuredValueSequence[0]
                value = float(mv.NumericValue)
                out["measurements"][name] = (value, mv.MeasurementUnitsCodeSequence[0].CodeValue)
                if _code(item.ConceptNameCodeSequence[0]) == codes.DCM.ProbabilityOfCancer.value:
                    out["probability"] = value
            elif item.ValueType == "CODE" and _code(item.ConceptNameCodeSequence[0]) == \
                    codes.DCM.AssessmentCategory.value:
                out["birads_suggestion"] = _code(item.ConceptCodeSequence[0]).removeprefix("BIRADS-")
            elif item.ValueType == "TEXT":
                out["text"].append(item.TextValue)
            if "ContentSequence" in item:
                walk(item.ContentSequence)

    walk(ds.ContentSequence)
    return out
