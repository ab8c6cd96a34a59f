"""Alert quality per model version over time: precision from feedback, alert load, ignored rate,
time to act, detection delay. ``format_quality_table`` renders it for the CLI."""

from cloud.quality.report import format_quality_table, quality_by_model_version

__all__ = ["format_quality_table", "quality_by_model_version"]
