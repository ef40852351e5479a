"""Search. ``vatt search`` finds the nearest items of a ``vatt embed`` file
(:mod:`vatt.search.embeddings`); ``vatt index`` builds a moment index of a video library
(:mod:`vatt.search.window_index`), :mod:`vatt.search.engine` answers text, video and audio queries
over it (and holds the exact top-k both use), and ``vatt serve`` (:mod:`vatt.search.server`) is the
local web app on top."""

from .engine import Hit, SearchEngine, merge_windows, top_k
from .window_index import WindowIndex, build_index, load_index

__all__ = ["Hit", "SearchEngine", "WindowIndex", "build_index", "load_index", "merge_windows", "top_k"]
