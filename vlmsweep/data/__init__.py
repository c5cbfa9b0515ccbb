"""Datasets: schemas, synthetic prescriptions and receipts, manifests, real receipts, mixing, splits, cache."""

from .build import FOCUSES, build_split, generate_targeted, render_sample
from .images import ImageLoadError, check_image, load_image
from .leakage import LeakageError, check_no_leak
from .manifest import ManifestError, ManifestResult, read_manifest, scan_manifest, write_manifest
from .mix import assign_domains, domain_weights
from .record import DOMAINS, SPLITS, Record
from .schema import empty_target, load_schema, schema_errors, validate_target
from .splits import Splits, load_splits, needed_splits
from .sroie import load_sroie

__all__ = [
    "DOMAINS", "FOCUSES", "SPLITS", "ImageLoadError", "LeakageError", "ManifestError", "ManifestResult", "Record",
    "Splits", "assign_domains", "build_split", "check_image", "check_no_leak", "domain_weights", "empty_target",
    "generate_targeted", "load_image", "load_schema", "load_splits", "load_sroie", "needed_splits", "read_manifest",
    "render_sample", "scan_manifest", "schema_errors", "validate_target", "write_manifest",
]
