"""Interaction data: the data model, readers, validation, curation, splits and the catalog."""

from privrank.data.interactions import CurationStep, DatasetMetadata, Interactions

__all__ = ["CurationStep", "DatasetMetadata", "Interactions"]
