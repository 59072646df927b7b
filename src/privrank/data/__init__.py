"""Interaction data: the data model, readers, validation, curation, splits and the catalog.

Layer: imports only the base modules (errors, settings, atomic).
"""

from privrank.data.interactions import CurationStep, DatasetMetadata, Interactions

__all__ = ["CurationStep", "DatasetMetadata", "Interactions"]
