//! Data pipeline: tokenizers, sources, token shards, packing, merging, background loading.
