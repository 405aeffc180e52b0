"""One module per dataset: its data-list builder, its look-alike writer, its dataset-specific transforms."""
