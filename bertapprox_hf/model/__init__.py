"""The student model as remote code: config, model, tokenizer, text normalisation and the shared pooling math.

The files of this folder are copied beside every saved student (``save_pretrained``) and loaded from there with
``trust_remote_code=True``: they import only torch, numpy, regex, transformers and each other (relatively).
"""
