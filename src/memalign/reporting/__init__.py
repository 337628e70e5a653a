"""Report building blocks shared by the bench and persona reports: one table model rendered to every
output format (:mod:`memalign.reporting.table`) and the charts they draw (:mod:`memalign.reporting.plots`,
imported on use: it needs matplotlib)."""

from memalign.reporting.table import Column, Table, markdown_document

__all__ = ["Column", "Table", "markdown_document"]
