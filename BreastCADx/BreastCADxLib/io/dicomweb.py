"""PACS over DICOMweb (dicomweb-client): QIDO-RS query, WADO-RS retrieve, STOW-RS store.

Credentials never come from the command line: basic-auth passwords and bearer tokens are read from
environment variables. TLS certificates are verified unless the caller turns that off explicitly.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pydicom
import requests

from BreastCADxLib import RESULT_SERIES_PREFIX
from BreastCADxLib.errors import BreastCADxError

PASSWORD_ENV = "BREASTCADX_PACS_PASSWORD"
TOKEN_ENV = "BREASTCADX_PACS_TOKEN"
STUDY_FIELDS = {
    "StudyInstanceUID": "0020000D", "PatientID": "00100020", "PatientName": "00100010", "StudyDate": "00080020",
    "StudyDescription": "00081030", "AccessionNumber": "00080050", "ModalitiesInStudy": "00080061",
}
SERIES_FIELDS = {
    "SeriesInstanceUID": "0020000E", "Modality": "00080060", "SeriesNumber": "00200011",
    "SeriesDescription": "0008103E", "NumberOfSeriesRelatedInstances": "00201209",
}


IMAGE_MODALITIES = ("US", "MG", "MR", "CT", "DX", "CR", "OT")
UID_PATTERN = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def instance_file_name(ds: pydicom.Dataset, index: int) -> str:
    """A file name from the server's SOPInstanceUID only when it is a valid DICOM UID (digits and dots, at most
    64 characters); anything else (e.g. '../../x') becomes instance_<index>: the name never leaves the folder."""
    uid = str(getattr(ds, "SOPInstanceUID", ""))
    return f"{uid}.dcm" if UID_PATTERN.match(uid) and len(uid) <= 64 else f"instance_{index:05d}.dcm"


class PacsError(BreastCADxError):
    """The PACS could not be reached, refused the request, or answered with something unusable."""


@dataclass
class PacsConfig:
    url: str
    username: str | None = None  # basic auth; the password comes from $BREASTCADX_PACS_PASSWORD
    token_env: str | None = None  # name of an env var holding a bearer token
    verify: bool | str = True  # False, or a CA bundle path
    timeout: float = 30.0
    attempts: int = 2  # dicomweb-client retries failed requests (429/503/504, network errors) with back-off
    allow_http_auth: bool = False  # basic auth over plain http to a host other than loopback (password in clear)


class _ExplicitVerifySession(requests.Session):
    """A session whose own `verify` (a CA bundle given on the command line, or False) is not replaced by
    REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE, as requests does for plain sessions."""

    def merge_environment_settings(self, url, proxies, stream, verify, cert):
        settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
        settings["verify"] = self.verify
        return settings


def is_loopback(host: str) -> bool:
    """A host name or address of this machine only (localhost, 127.0.0.0/8, ::1)."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_loopback(url: str) -> bool:
    from urllib.parse import urlparse

    return is_loopback(urlparse(url).hostname or "")


def _value(item: dict, tag: str) -> str:
    values = item.get(tag, {}).get("Value", [])
    if not values:
        return ""
    v = values[0]
    if isinstance(v, dict):  # person name
        return str(v.get("Alphabetic", ""))
    return "\\".join(str(x) for x in values) if len(values) > 1 else str(v)


class Pacs:
    def __init__(self, config: PacsConfig) -> None:
        from dicomweb_client.api import DICOMwebClient

        self.config = config
        session = requests.Session() if config.verify is True else _ExplicitVerifySession()
        session.verify = config.verify
        if config.username and config.url.lower().startswith("http://") and not _is_loopback(config.url) \
                and not config.allow_http_auth:
            raise PacsError("basic auth over plain http would send the password in clear: use https, or pass "
                            "--allow-http-auth on a trusted network", config.url)
        if config.username:
            password = os.environ.get(PASSWORD_ENV)
            if password is None:
                raise PacsError(f"basic auth for '{config.username}' needs the password in ${PASSWORD_ENV}",
                                config.url)
            session.auth = (config.username, password)
        if config.token_env:
            token = os.environ.get(config.token_env)
            if not token:
                raise PacsError(f"bearer token variable ${config.token_env} is not set", config.url)
            session.headers["Authorization"] = f"Bearer {token}"
        self.session = session
        self.client = DICOMwebClient(config.url.rstrip("/"), session=session, timeout=config.timeout)
        self.client.set_http_retry_params(retry=config.attempts > 1, max_attempts=max(1, config.attempts),
                                          wait_exponential_multiplier=500)

    def _http_error(self, what: str, response: requests.Response | None, note: str = "") -> PacsError:
        code = response.status_code if response is not None else "?"
        reason = response.reason if response is not None else ""
        hint = {401: " (check user / password / token)", 403: " (not allowed for this account)",
                404: " (no such study or series, or no DICOMweb service at this URL)"}.get(code, "")
        return PacsError(f"{what}: the PACS answered {code} {reason}{hint}{note}", self.config.url)

    def _call(self, what: str, fn, *args, **kwargs):
        import retrying

        try:
            return fn(*args, **kwargs)
        except retrying.RetryError as e:  # still 429/503/504 after the last attempt
            response = e.last_attempt.value if not e.last_attempt.has_exception else None
            raise self._http_error(what, response, f" after {self.config.attempts} attempts") from None
        except requests.exceptions.HTTPError as e:
            raise self._http_error(what, e.response) from None
        except requests.exceptions.SSLError as e:
            raise PacsError(f"{what}: TLS certificate check failed ({e.__class__.__name__}); pass a CA bundle "
                            "or, on a trusted network only, turn verification off", self.config.url) from None
        except requests.exceptions.Timeout:
            raise PacsError(f"{what}: no answer within {self.config.timeout:g} s", self.config.url) from None
        except requests.exceptions.ConnectionError:
            raise PacsError(f"{what}: cannot connect (is the PACS running and the URL right?)",
                            self.config.url) from None
        except (requests.exceptions.RequestException, ValueError) as e:
            raise PacsError(f"{what}: {e.__class__.__name__}: {e}", self.config.url) from None

    def query_studies(self, patient_id: str | None = None, study_uid: str | None = None,
                      modality: str | None = None, limit: int = 100) -> list[dict[str, str]]:
        filters = {k: v for k, v in (("PatientID", patient_id), ("StudyInstanceUID", study_uid),
                                     ("ModalitiesInStudy", modality)) if v}
        found = self._call("study query (QIDO-RS)", self.client.search_for_studies, search_filters=filters,
                           limit=limit, fields=list(STUDY_FIELDS))
        return [{k: _value(item, tag) for k, tag in STUDY_FIELDS.items()} for item in found]

    def query_series(self, study_uid: str, modality: str | None = None) -> list[dict[str, str]]:
        filters = {"Modality": modality} if modality else {}
        found = self._call("series query (QIDO-RS)", self.client.search_for_series,
                           study_instance_uid=study_uid, search_filters=filters, fields=list(SERIES_FIELDS))
        return [{k: _value(item, tag) for k, tag in SERIES_FIELDS.items()} for item in found]

    def image_series(self, study_uid: str, series_uid: str | None = None) -> str:
        """The series to analyse: `series_uid` if given, else the study's only image series (not our results)."""
        if series_uid:
            return series_uid
        found = [s for s in self.query_series(study_uid) if s["Modality"] in IMAGE_MODALITIES
                 and not s["SeriesDescription"].startswith(RESULT_SERIES_PREFIX)]
        if len(found) != 1:
            listing = ", ".join(f"{s['SeriesInstanceUID']} ({s['Modality']})" for s in found) or "none"
            raise PacsError(f"study {study_uid} has {len(found)} image series ({listing}); choose one",
                            self.config.url)
        return found[0]["SeriesInstanceUID"]

    def retrieve_series(self, study_uid: str, series_uid: str, dest: Path) -> Path:
        """All instances of a series into dest/ (one .dcm each); dest appears only once complete."""
        if dest.exists():
            raise PacsError(f"will not overwrite existing folder {dest}", self.config.url)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".retrieve-", dir=dest.parent))
        try:
            instances = self._call("series retrieve (WADO-RS)", self.client.retrieve_series, study_uid, series_uid)
            if not instances:
                raise PacsError(f"series {series_uid} holds no instances", self.config.url)
            for k, ds in enumerate(instances):
                ds.save_as(tmp / instance_file_name(ds, k), enforce_file_format=True)
            tmp.rename(dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return dest

    def store(self, datasets: list[pydicom.Dataset]) -> None:
        """STOW-RS; raises if the PACS reports any instance as failed."""
        answer = self._call("store (STOW-RS)", self.client.store_instances, datasets)
        failed = answer.get("FailedSOPSequence") if answer is not None else None
        if failed:
            raise PacsError(f"the PACS refused {len(failed)} of {len(datasets)} instances", self.config.url)
