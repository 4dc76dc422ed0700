"""Helpers with no model inside: image transforms, video reading, mask utilities."""
