"""Build configuration of the optional compiled bag tokenizer; everything else is in pyproject.toml.

The extension is optional: without a C++17 compiler ``pip install`` still succeeds and the tokenizer runs in
pure Python (bertapprox_hf/fast_bags.py says so once).
"""

import sys

from setuptools import Extension, setup

compile_args = ["/std:c++17", "/O2"] if sys.platform == "win32" else ["-std=c++17", "-O3"]

setup(
    ext_modules=[
        Extension(
            "bertapprox_hf._fastbag",
            sources=["bertapprox_hf/csrc/fastbag.cpp"],
            depends=["bertapprox_hf/csrc/unicode_tables.h"],
            language="c++",
            extra_compile_args=compile_args,
            optional=True,
        )
    ]
)
