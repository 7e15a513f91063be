"""Token-id indexes that drafting queries: per request, and over a whole document store."""

from reader_rag.index.request_index import Match, RequestIndex

__all__ = ["Match", "RequestIndex"]
