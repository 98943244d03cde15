"""Internals of `provenance.exports`: the EU AI Act Annex IV document (`annex`) and the Hugging Face model card
(`card`), both built from a publishable verify report and, when available, the run manifest it verified."""
