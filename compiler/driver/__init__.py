"""compile() and what it orchestrates: options, pipeline assembly, verification, report, emit."""
