"""Run an exported student: the Python tokenizer makes bags, the graph (ONNX Runtime or TorchScript) embeds them.

    student = OnnxStudent.from_pretrained("exported/onnx")            # or dtype="int8"
    embeddings = student.encode(["what is the interest rate", "new york city"])   # [2, dim] float32

The API mirrors :class:`bertapprox_hf.Encoder` (``encode``, ``embed_bags``, ``dim``,
``similarity``) without its cache. The tokenizer is not part of the graph: it is the same
``BertApproxTokenizer`` (``vocab.txt`` and ``tokenizer_config.json`` beside the graph).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

from ..inference.protocol import ConfigProperties
from ..model.configuration_bertapprox import BertApproxConfig
from ..model.encoding_bertapprox import check_batch_size, embed_sorted, encode_texts
from ..model.tokenization_bertapprox import BertApproxTokenizer, pad_bag_arrays
from .graph import INPUT_NAMES

ONNX_FILES = {"float32": "model.onnx", "int8": "model_int8.onnx"}
TORCHSCRIPT_FILE = "model.pt"


def resolve_folder(name_or_path: str | os.PathLike, file_name: str) -> str:
    """A local folder holding ``file_name``: ``name_or_path`` itself, or a Hub repository's snapshot of it."""
    path = os.fspath(name_or_path)
    if not os.path.isdir(path):
        if os.path.isabs(path) or path.startswith(".") or path.count("/") != 1:
            raise FileNotFoundError(f"export folder not found: {path}")
        from huggingface_hub import snapshot_download

        try:
            path = snapshot_download(path, allow_patterns=[file_name, "*.json", "*.txt", "*.py"])
        except Exception as error:  # huggingface_hub has many error types (offline, 404, auth)
            raise OSError(f"{path} is neither a local folder nor a reachable Hub repository: {error}") from error
    if not os.path.isfile(os.path.join(path, file_name)):
        raise FileNotFoundError(f"{file_name} not found in {path}")
    return path


class ExportedStudent(ConfigProperties):
    """Texts → bags (Python tokenizer) → padded batches → an exported graph → embeddings."""

    def __init__(self, folder: str, tokenizer: BertApproxTokenizer, config: BertApproxConfig) -> None:
        self.folder = folder
        self.tokenizer = tokenizer
        self.config = config
        self.vocab_size = config.vocab_size
        self.max_bag_size = config.max_bag_size

    @staticmethod
    def _load_parts(folder: str) -> tuple[BertApproxTokenizer, BertApproxConfig]:
        return BertApproxTokenizer.from_pretrained(folder), BertApproxConfig.from_pretrained(folder)

    def _run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _embed(self, bags: list) -> torch.Tensor:
        """Embeddings [len(bags), dim] of one batch of bags: padded, then one run of the graph."""
        return torch.from_numpy(np.asarray(self._run(*pad_bag_arrays(bags)), dtype=np.float32))

    def embed_bags(self, bags: Sequence[Sequence[int]], batch_size: int = 64) -> np.ndarray:
        """Embeddings [len(bags), dim] float32 of bags of entry ids, ``batch_size`` bags a run."""
        if bags is None or isinstance(bags, (str, bytes)):
            raise TypeError(f"expected a list of bags of entry ids, got {type(bags).__name__}")
        batch_size = check_batch_size(batch_size)
        bags = list(bags)
        for position, bag in enumerate(bags):
            ids = np.asarray(bag)
            if ids.ndim != 1 or (
                ids.size and (ids.dtype.kind not in "iu" or ids.min() < 0 or ids.max() >= self.vocab_size)
            ):
                raise ValueError(f"bag {position} must be a list of integer entry ids in [0, {self.vocab_size})")
        return embed_sorted(bags, self._embed, self.dim, batch_size).numpy()

    def encode(
        self,
        texts: str | Sequence[str],
        batch_size: int = 64,
        convert_to_numpy: bool = True,
        normalize_embeddings: bool = False,
        show_progress_bar: bool = False,
    ) -> np.ndarray | torch.Tensor:
        """Embed texts: a [n, dim] float32 array (one row, 1-D, for a single string), like ``Encoder.encode``.

        Texts are batched by bag length (less padding) and returned in input order.
        """
        return encode_texts(
            texts,
            lambda batch: self.tokenizer.encode_bags(batch, self.max_bag_size),
            self._embed,
            self.dim,
            batch_size=batch_size,
            convert_to_numpy=convert_to_numpy,
            normalize_embeddings=normalize_embeddings,
            show_progress_bar=show_progress_bar,
        )


class OnnxStudent(ExportedStudent):
    """An exported ONNX student run with ONNX Runtime; build it with :meth:`from_pretrained`."""

    def __init__(self, folder: str, session, tokenizer: BertApproxTokenizer, config: BertApproxConfig) -> None:
        super().__init__(folder, tokenizer, config)
        self.session = session
        self.output_name = session.get_outputs()[0].name

    @classmethod
    def from_pretrained(
        cls,
        folder: str | os.PathLike,
        dtype: str = "float32",
        providers: Sequence[str] | None = None,
        num_threads: int | None = None,
    ) -> OnnxStudent:
        """Load ``model.onnx`` (``dtype="int8"``: ``model_int8.onnx``) and the tokenizer from an export folder.

        Args:
            folder: folder written by ``bertapprox export onnx`` (or a Hub repository holding one).
            dtype: ``"float32"`` or ``"int8"`` (the dynamically quantized graph, if it was exported).
            providers: ONNX Runtime execution providers; default: all available, in ONNX Runtime's order.
            num_threads: intra-op threads; default: ONNX Runtime's (one per physical core).
        """
        if dtype not in ONNX_FILES:
            raise ValueError(f"dtype must be one of {', '.join(ONNX_FILES)}, got {dtype!r}")
        import onnxruntime as ort

        path = resolve_folder(folder, ONNX_FILES[dtype])
        options = ort.SessionOptions()
        if num_threads is not None:
            options.intra_op_num_threads = int(num_threads)
        options.log_severity_level = 3  # errors only
        # Idle worker threads sleep instead of spinning: spinning keeps the cores busy between calls and
        # slows whatever else runs in the process (tokenization, PyTorch).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(
            os.path.join(path, ONNX_FILES[dtype]), options, providers=list(providers or ort.get_available_providers())
        )
        names = tuple(i.name for i in session.get_inputs())
        if names != INPUT_NAMES:
            raise ValueError(f"{path}/{ONNX_FILES[dtype]} takes inputs {names}, expected {INPUT_NAMES}")
        return cls(path, session, *cls._load_parts(path))

    def _run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        feeds = {INPUT_NAMES[0]: input_ids, INPUT_NAMES[1]: attention_mask}
        return self.session.run([self.output_name], feeds)[0]

    def __repr__(self) -> str:
        return f"OnnxStudent(vocab={self.vocab_size}, dim={self.dim}, providers={self.session.get_providers()})"


class TorchScriptStudent(ExportedStudent):
    """An exported TorchScript student (``model.pt``); build it with :meth:`from_pretrained`."""

    def __init__(
        self, folder: str, module, tokenizer: BertApproxTokenizer, config: BertApproxConfig, device: torch.device
    ) -> None:
        super().__init__(folder, tokenizer, config)
        self.module = module
        self.device = device

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, device: str | torch.device = "cpu") -> TorchScriptStudent:
        """Load ``model.pt`` (``torch.jit.load``) and the tokenizer from an export folder."""
        path = resolve_folder(folder, TORCHSCRIPT_FILE)
        device = torch.device(device)
        module = torch.jit.load(os.path.join(path, TORCHSCRIPT_FILE), map_location=device).eval()
        return cls(path, module, *cls._load_parts(path), device=device)

    @torch.inference_mode()
    def _run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        ids = torch.from_numpy(input_ids).to(self.device)
        mask = torch.from_numpy(attention_mask).to(self.device)
        return self.module(ids, mask).float().cpu().numpy()

    def __repr__(self) -> str:
        return f"TorchScriptStudent(vocab={self.vocab_size}, dim={self.dim}, device={self.device})"
