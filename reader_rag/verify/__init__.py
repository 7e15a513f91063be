"""Verifying a draft tree: attention masks, the acceptance walk and the KV-cache commit."""

from reader_rag.verify.accept import walk_tree
from reader_rag.verify.cache import commit_kv
from reader_rag.verify.mask import ancestor_matrix, tree_attention_inputs

__all__ = ["ancestor_matrix", "commit_kv", "tree_attention_inputs", "walk_tree"]
