"""Data for gptjax: corpora -> TFDS array_record -> tokenizer -> grain batches.

    ds = make_lm_datasets(config)       # prepares (once) and reuses everything under data.data_dir
    next(ds.train)["tokens"]            # int32[batch_size // process_count, seq_len + 1]
    ds.train.get_state() / set_state()  # exact resume
    for batch in ds.eval_splits["validation"](): ...   # tokens + mask, the whole held-out split
"""

from gptjax.data.pipeline import Datasets, make_lm_datasets
from gptjax.data.prepare import PreparedData, prepare_data
from gptjax.data.tokenizers import (
    CharTokenizer,
    SentencePieceTokenizer,
    Tokenizer,
    load_tokenizer,
    tokenizer_from_json,
)

__all__ = [
    "CharTokenizer",
    "Datasets",
    "PreparedData",
    "SentencePieceTokenizer",
    "Tokenizer",
    "load_tokenizer",
    "make_lm_datasets",
    "prepare_data",
    "tokenizer_from_json",
]
