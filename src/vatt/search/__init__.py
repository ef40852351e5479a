"""Moment-level search of a video library: ``vatt index`` builds a window index
(:mod:`vatt.search.index`), :mod:`vatt.search.engine` answers text, video and audio queries
over it, and ``vatt serve`` (:mod:`vatt.search.server`) is the local web app on top."""

from .engine import Hit, SearchEngine, merge_windows, top_k
from .index import WindowIndex, build_index, load_index

__all__ = ["Hit", "SearchEngine", "WindowIndex", "build_index", "load_index", "merge_windows", "top_k"]
