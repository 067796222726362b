"""Prescription requests, doctors' signed prescriptions, pharmacist review, audit, FHIR export."""
