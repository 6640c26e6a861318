"""Kept only until analyze moves to :mod:`emotionclip.jobs` (issue 21, phase 2): the same names."""

from .jobs import Part, current_part, merge_part_summaries, parse_part, part_summary_path, rank_device

__all__ = ["Part", "current_part", "merge_part_summaries", "parse_part", "part_summary_path", "rank_device"]
