"""Datasets: schemas, synthetic prescriptions and receipts, manifests, real receipts, mixing, splits, cache."""

from .build import FOCUSES, build_split, generate_targeted, render_sample
from .images import ImageLoadError, load_image
from .manifest import ManifestError, ManifestResult, read_manifest, write_manifest
from .mix import assign_domains, domain_weights
from .record import DOMAINS, SPLITS, Record
from .schema import empty_target, load_schema, schema_errors, validate_target
from .sroie import load_sroie

__all__ = [
    "DOMAINS", "FOCUSES", "SPLITS", "ImageLoadError", "ManifestError", "ManifestResult", "Record",
    "assign_domains", "build_split", "domain_weights", "empty_target", "generate_targeted", "load_image",
    "load_schema", "load_sroie", "read_manifest", "render_sample", "schema_errors", "validate_target",
    "write_manifest",
]
