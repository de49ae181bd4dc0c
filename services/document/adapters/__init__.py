"""Adapters behind the document ports: PDF generation, the PAdES seal, DocuSign."""
