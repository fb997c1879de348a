"""PACS over DICOMweb (dicomweb-client): QIDO-RS query, WADO-RS retrieve, STOW-RS store.

Credentials never come from the command line: basic-auth passwords and bearer tokens are read from
environment variables. TLS certificates are verified unless the caller turns that off explicitly.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
import time
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


RETRIABLE_STATUS = (429, 503, 504)
IMAGE_MODALITIES = ("US", "MG", "MR", "CT", "DX", "CR", "OT")
UID_PATTERN = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def instance_file_name(ds: pydicom.Dataset, index: int) -> str:
    """A file name from the server's SOPInstanceUID only when it is a valid DICOM UID (digits and dots, at most
    64 characters); anything else (e.g. '../../x') becomes instance_<index>: the name never leaves the folder."""
    uid = str(getattr(ds, "SOPInstanceUID", ""))
    return f"{uid}.dcm" if UID_PATTERN.match(uid) and len(uid) <= 64 else f"instance_{index:05d}.dcm"


class PacsError(BreastCADxError):
    """The PACS could not be reached, refused the request, or answered with something unusable."""

    code = "pacs"


@dataclass
class PacsConfig:
    url: str
    username: str | None = None  # basic auth; the password comes from $BREASTCADX_PACS_PASSWORD
    token_env: str | None = None  # name of an env var holding a bearer token
    verify: bool | str = True  # False, or a CA bundle path
    timeout: float = 30.0
    attempts: int = 2  # dicomweb-client retries failed requests (429/503/504, network errors) with back-off
    allow_http_auth: bool = False  # basic auth over plain http to a host other than loopback (password in clear)

    def __post_init__(self) -> None:
        """Refuse what cannot work before anything is sent."""
        from urllib.parse import urlparse

        try:
            parts = urlparse(self.url)
            host_ok = bool(parts.hostname)
        except ValueError:
            parts, host_ok = None, False
        if parts is None or parts.scheme not in ("http", "https") or not host_ok:
            raise PacsError("the PACS URL must start with http:// or https:// and name a host, e.g. "
                            "https://pacs.example.org/dicom-web", self.url)
        if not isinstance(self.timeout, (int, float)) or not math.isfinite(self.timeout) or self.timeout <= 0:
            raise PacsError(f"--timeout must be a number of seconds above 0, not {self.timeout}")
        if isinstance(self.verify, str) and not Path(self.verify).is_file():
            raise PacsError("CA bundle not found (pass the path of a PEM file)", self.verify)
        if self.attempts < 1:
            raise PacsError(f"attempts must be 1 or more, not {self.attempts}")


class _Session(requests.Session):
    """One total deadline per PACS request (`deadline`, monotonic seconds): every HTTP attempt, retries included,
    waits at most what is left of it, so --timeout is the time the user waits. With `explicit_verify`, its own
    `verify` (a CA bundle given on the command line, or False) is not replaced by REQUESTS_CA_BUNDLE /
    CURL_CA_BUNDLE, as requests does for plain sessions."""

    deadline: float | None = None
    explicit_verify: bool = False

    def request(self, method, url, *args, **kwargs):
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0.05:
                raise requests.exceptions.Timeout("the request's deadline has passed")
            kwargs["timeout"] = left
        return super().request(method, url, *args, **kwargs)

    def merge_environment_settings(self, url, proxies, stream, verify, cert):
        settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
        if self.explicit_verify:
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
        session = _Session()
        session.verify, session.explicit_verify = config.verify, config.verify is not True
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
        self.client.set_http_retry_params(retry=False)  # retried here, within the request's deadline (_call)

    def _http_error(self, what: str, response: requests.Response | None, note: str = "") -> PacsError:
        code = response.status_code if response is not None else "?"
        reason = response.reason if response is not None else ""
        hint = {401: " (check user / password / token)", 403: " (not allowed for this account)",
                404: " (no such study or series, or no DICOMweb service at this URL)"}.get(code, "")
        return PacsError(f"{what}: the PACS answered {code} {reason}{hint}{note}", self.config.url)

    def _call(self, what: str, fn, *args, **kwargs):
        """One PACS request within one deadline (--timeout, retries included): 429/503/504 answers and refused
        connections are retried with back-off while time is left; every failure is one clear PacsError."""
        deadline = time.monotonic() + self.config.timeout
        self.session.deadline = deadline
        wait = 0.5
        try:
            for attempt in range(1, self.config.attempts + 1):
                try:
                    return fn(*args, **kwargs)
                except (requests.exceptions.HTTPError, requests.exceptions.ConnectionError) as e:
                    status = getattr(getattr(e, "response", None), "status_code", None)
                    retriable = status in RETRIABLE_STATUS or (
                        type(e) is requests.exceptions.ConnectionError)  # not a timeout or a TLS failure
                    if retriable and attempt < self.config.attempts and deadline - time.monotonic() > wait + 0.2:
                        time.sleep(wait)
                        wait *= 2
                        continue
                    raise self._failure(what, e, attempt) from None
                except (requests.exceptions.RequestException, ValueError) as e:  # JSON errors are ValueErrors
                    raise self._failure(what, e, attempt) from None
        finally:
            self.session.deadline = None

    def _failure(self, what: str, e: Exception, attempts: int) -> PacsError:
        url = self.config.url
        if isinstance(e, requests.exceptions.HTTPError):
            return self._http_error(what, e.response, f" after {attempts} attempts" if attempts > 1 else "")
        if isinstance(e, requests.exceptions.SSLError):
            if "wrong version number" in str(e).lower() or "record layer failure" in str(e).lower():
                return PacsError(f"{what}: the server speaks plain HTTP, not TLS: use an http:// URL (or the "
                                 "server's https port)", url)
            return PacsError(f"{what}: TLS certificate check failed ({e.__class__.__name__}); pass a CA bundle "
                             "or, on a trusted network only, turn verification off", url)
        if isinstance(e, requests.exceptions.Timeout):
            return PacsError(f"{what}: no answer within {self.config.timeout:g} s", url)
        if isinstance(e, requests.exceptions.ConnectionError):
            return PacsError(f"{what}: cannot connect (is the PACS running and the URL right?)", url)
        if isinstance(e, (json.JSONDecodeError, requests.exceptions.JSONDecodeError)):
            return PacsError(f"{what}: the server's answer is not DICOMweb JSON (a web page? check that the URL is "
                             "the DICOMweb root, e.g. .../dicom-web)", url)
        return PacsError(f"{what}: {e.__class__.__name__}: {e}", url)

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
